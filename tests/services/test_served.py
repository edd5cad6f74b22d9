"""services.core.served: the registry of served model versions decides what submissions key jobs by."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.db import create_db_engine, session_factory
from services.core.served import ModelNotServedError, Preprocessing, preprocessing, register, resolve
from services.core.versions import ModelVersion
from tests import platform_servers

pytestmark = pytest.mark.integration

private_postgres_url = platform_servers.private_postgres_url  # the registry is global to a database

SETTINGS = Settings(  # type: ignore[call-arg]
    _env_file=None, model_name="tsm", model_version="1", num_segments=8, clip_resize=256, clip_crop=224
)


@pytest.fixture()
def session(private_postgres_url: str) -> Iterator[Session]:
    engine = create_db_engine(private_postgres_url)
    with session_factory(engine)() as s:
        yield s
        s.rollback()  # each test's registrations are its own
    engine.dispose()


def test_without_a_registered_server_the_settings_name_the_model(session: Session) -> None:
    assert resolve(session, SETTINGS) == ModelVersion("tsm", "1")
    assert (
        resolve(session, SETTINGS, "tsm") == resolve(session, SETTINGS, "tsm:1") == ModelVersion("tsm", "1")
    )
    with pytest.raises(ModelNotServedError, match=r"'tsm:2' is not served; served: tsm:1"):
        resolve(session, SETTINGS, "tsm:2")
    assert preprocessing(session, SETTINGS, ModelVersion("tsm", "1")) == Preprocessing(8, 256, 224)


def test_the_registered_version_wins_over_the_settings(session: Session) -> None:
    register(session, ModelVersion("tsm", "2"), Preprocessing(8, 72, 64), server="torchserve")
    session.flush()
    assert resolve(session, SETTINGS) == ModelVersion("tsm", "2")
    # A new default version of the name; the old one stays servable by its full name.
    register(session, ModelVersion("tsm", "3"), Preprocessing(16, 256, 224), server="torchserve")
    register(session, ModelVersion("motion", "1"), Preprocessing(8, 36, 32), server="torchserve")
    session.flush()
    assert resolve(session, SETTINGS) == resolve(session, SETTINGS, "tsm") == ModelVersion("tsm", "3")
    assert resolve(session, SETTINGS, "tsm:2") == ModelVersion("tsm", "2")
    assert resolve(session, SETTINGS, "motion") == ModelVersion("motion", "1")
    with pytest.raises(ModelNotServedError) as caught:
        resolve(session, SETTINGS, "tsm:1")  # the settings' version is no longer what is served
    assert str(caught.value) == "model 'tsm:1' is not served; served: motion:1, tsm:3, tsm:2"
    with pytest.raises(ModelNotServedError):
        resolve(session, SETTINGS, "other")
    assert preprocessing(session, SETTINGS, ModelVersion("tsm", "3")) == Preprocessing(16, 256, 224)
    assert preprocessing(session, SETTINGS, ModelVersion("motion", "1")) == Preprocessing(8, 36, 32)
