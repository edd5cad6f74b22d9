from tests.platform_servers import *  # noqa: F403
