from tests.torchserve_server import *  # noqa: F403
