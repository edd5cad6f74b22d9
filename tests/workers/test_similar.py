"""Similar-moment search on an index of generated motion clips with the shipped model: embedded
mode (SQLite, exact search) and platform mode (PostgreSQL + pgvector HNSW) give the same ranking,
and a fresh clip of one class finds clips of that class; the API and the CLI answer the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from services.api.main import create_app
from services.core.apikeys import create_api_key
from services.core.config import Settings, get_settings
from services.core.models import DEFAULT_TENANT_ID, IndexedWindow, LabelSegment, Tenant, Video
from services.core.similar import SimilarHit, similar_to_vector
from tests.pgvector_server import *  # noqa: F403
from workers.cli import app
from workers.clip_query import ClipEmbedder
from workers.embedded import embedded_context, index_files
from workers.indexing.context import PipelineContext
from workers.training.motion import DIRECTION_CLASSES
from workers.training.shipped import SHIPPED_MODEL, write_demo_clips

CLIPS = 40  # ten per direction
TOP = 5


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("archive")
    write_demo_clips(root, count=CLIPS, seed=2024)
    return sorted(root.glob("*/*.mp4"))


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fresh clip per direction (a seed the archive and the training never used)."""
    root = tmp_path_factory.mktemp("queries")
    write_demo_clips(root, count=len(DIRECTION_CLASSES), seed=77)
    return {path.parent.name: path for path in root.glob("*/*.mp4")}


def _indexed(settings: Settings, archive: list[Path]) -> PipelineContext:
    ctx = embedded_context(settings, SHIPPED_MODEL)
    results = index_files(ctx, archive)
    assert all(r.status == "succeeded" for r in results)
    return ctx


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, archive: list[Path]) -> Iterator[PipelineContext]:
    """Embedded mode: SQLite in a data dir of its own, local storage, the exact search."""
    ctx = _indexed(Settings(data_dir=tmp_path_factory.mktemp("embedded")), archive)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, archive: list[Path], pgvector_url: str
) -> Iterator[PipelineContext]:
    """The same pipeline on PostgreSQL with pgvector (HNSW cosine index)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("platform"), database_url=pgvector_url)
    ctx = _indexed(settings, archive)
    yield ctx
    ctx.close()


def _like(ctx: PipelineContext, clip: Path) -> list[SimilarHit]:
    model, vector = ClipEmbedder(ctx.settings, ctx.classifier)(clip)
    with ctx.sessions() as session:
        return similar_to_vector(session, model=model, vector=vector, k=TOP)


def _direction(hit: SimilarHit) -> str:
    return (hit.filename or "").split("_")[0]


def test_a_fresh_clip_finds_its_class_the_same_way_in_both_modes(
    embedded: PipelineContext, platform: PipelineContext, queries: dict[str, Path]
) -> None:
    for direction, clip in sorted(queries.items()):
        local, served = _like(embedded, clip), _like(platform, clip)
        same = sum(_direction(h) == direction for h in local)
        print(
            f"\n{direction}: {same}/{TOP} of the top {TOP} are {direction}: {[_direction(h) for h in local]}"
        )
        assert same >= 4
        assert [h.filename for h in served] == [h.filename for h in local]
        assert [h.neighbour.score for h in served] == pytest.approx(
            [h.neighbour.score for h in local], abs=1e-3
        )


@pytest.fixture()
def client(platform: PipelineContext) -> Iterator[TestClient]:
    settings = platform.settings.model_copy(update={"storage_backend": "local"})
    with platform.sessions.begin() as session:
        # Embedded indexing files its videos under the default tenant: the key reads that tenant.
        default = session.get_one(Tenant, DEFAULT_TENANT_ID)
        _, key = create_api_key(session, settings, name="similar", tenant=default)
    embedder = ClipEmbedder(platform.settings, platform.classifier)
    with TestClient(
        create_app(settings, clip_embedder=embedder), headers={"Authorization": f"Bearer {key}"}
    ) as c:
        yield c


def test_the_api_answers_by_moment_window_and_clip(
    client: TestClient, platform: PipelineContext, queries: dict[str, Path]
) -> None:
    with platform.sessions() as session:
        moment, video = session.execute(
            select(LabelSegment, Video)
            .join(Video, Video.id == LabelSegment.video_id)
            .where(Video.filename.like("left_%"), LabelSegment.label == "left")
            .limit(1)
        ).one()
    by_moment = client.get(f"/v1/moments/{moment.id}/similar", params={"limit": TOP}).json()["items"]
    assert len(by_moment) == TOP and str(video.id) not in [h["video_id"] for h in by_moment]  # not itself
    assert sum(h["filename"].startswith("left_") for h in by_moment) >= 4
    by_window = client.get(f"/v1/videos/{video.id}/windows/0/similar", params={"limit": TOP}).json()["items"]
    assert [h["video_id"] for h in by_window] == [h["video_id"] for h in by_moment]

    with queries["up"].open("rb") as f:
        response = client.post(
            "/v1/moments/similar", params={"limit": TOP}, files={"file": ("q.mp4", f, "video/mp4")}
        )
    assert response.status_code == 200, response.text
    hits = response.json()["items"]
    assert [h["filename"] for h in hits] == [h.filename for h in _like(platform, queries["up"])]
    thumbnail = client.get(hits[0]["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert thumbnail.content[:2] == b"\xff\xd8"

    assert client.get("/v1/moments/999999999/similar").status_code == 404
    assert client.get(f"/v1/videos/{video.id}/windows/99/similar").status_code == 404
    not_video = client.post("/v1/moments/similar", files={"file": ("q.mp4", b"hello" * 100, "video/mp4")})
    assert not_video.status_code == 415


def test_without_an_embedder_clip_search_answers_503(
    platform: PipelineContext, queries: dict[str, Path]
) -> None:
    settings = platform.settings
    with platform.sessions.begin() as session:
        _, key = create_api_key(session, settings, name="no-embedder")
    with (
        TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c,
        queries["up"].open("rb") as f,
    ):
        assert c.post("/v1/moments/similar", files={"file": ("q.mp4", f, "video/mp4")}).status_code == 503


def test_the_cli_prints_the_nearest_moments_and_writes_their_thumbnails(
    embedded: PipelineContext, queries: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("TSMINDEX_DATABASE_URL", "TSMINDEX_CHECKPOINT_PATH", "TSMINDEX_MODE", "TSMINDEX_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TSMINDEX_DATA_DIR", str(embedded.settings.data_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            [
                "similar",
                str(queries["right"]),
                "--checkpoint",
                str(SHIPPED_MODEL),
                "--limit",
                str(TOP),
                "--thumbnails",
                str(tmp_path / "thumbs"),
            ],
            terminal_width=200,
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    expected = _like(embedded, queries["right"])
    for hit in expected:
        assert hit.filename is not None and hit.filename in result.output
    assert f"{expected[0].neighbour.score:.3f}" in result.output
    images = sorted((tmp_path / "thumbs").glob("*.jpg"))
    assert [p.name.split("-")[0] for p in images] == [f"{rank:02d}" for rank in range(1, TOP + 1)]
    assert all(p.read_bytes()[:2] == b"\xff\xd8" for p in images)
    first = expected[0].neighbour
    assert images[0].name == f"01-{first.video_id}-{first.window_index}.jpg"


def test_deleting_a_video_removes_its_thumbnails(
    client: TestClient, platform: PipelineContext, tmp_path: Path
) -> None:
    write_demo_clips(tmp_path, count=1, seed=5)
    [clip] = tmp_path.glob("*/*.mp4")
    [result] = index_files(platform, [clip])
    with platform.sessions() as session:
        keys = session.scalars(
            select(IndexedWindow.thumbnail_key).where(IndexedWindow.video_id == result.video_id)
        ).all()
    assert keys and all(key is not None and platform.storage.exists(key) for key in keys)
    assert client.delete(f"/v1/videos/{result.video_id}").status_code == 204
    assert not any(platform.storage.exists(str(key)) for key in keys)
