"""A fault harness: the platform as real processes on loopback (private Redis, PostgreSQL, moto S3,
TorchServe, the API, a prefork Celery worker, a webhook receiver) that scenarios can kill, stop,
flush and restart. The fault suite (tests/faults) and ``tsmindex bench faults`` both drive it, so
what the tests prove is what the report measures. Nothing here imports pytest."""
