from tests.platform_servers import *  # noqa: F403
from tests.torchserve_server import *  # noqa: F403
