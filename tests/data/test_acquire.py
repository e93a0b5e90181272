"""fetch_dataset: present / local copy / download, and archives that must be refused."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from segflow.config import DataConfig
from segflow.data.acquire import (
    CHUNK_BYTES,
    AcquireError,
    ArchiveLimits,
    ArchiveTooLarge,
    ExpansionMeter,
    fetch_dataset,
    md5sum,
    safe_extract,
)

FAKE_FILES = {
    "dataset.json": b'{"name": "Hippocampus", "numTraining": 2}',
    "imagesTr/hippocampus_001.nii.gz": b"image-001",
    "labelsTr/hippocampus_001.nii.gz": b"label-001",
    "labelsTr/hippocampus_010.nii.gz": b"label-010 (its image is missing)",
    "labelsTr/hippocampus_281.nii.gz": b"orphan label",
}


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` as relative POSIX path -> bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def fake_msd(tmp_path: Path) -> Path:
    """A tiny folder in MSD layout, defects included (a label without image, an orphan)."""
    folder = tmp_path / "shared" / "Task04_Hippocampus"
    for name, content in FAKE_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def served(tmp_path: Path):
    """(folder, base_url): files put in folder are served over HTTP on 127.0.0.1."""
    folder = tmp_path / "served"
    folder.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def make_archive(source: Path, archive: Path) -> Path:
    """Pack `source` under its own name as a top folder, as the MSD tar does."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in sorted(source.rglob("*")):
                zipped.write(path, Path(source.name, path.relative_to(source)).as_posix())
    else:
        mode = "w:gz" if archive.name.endswith((".tar.gz", ".tgz")) else "w"
        with tarfile.open(archive, mode) as tar:
            tar.add(source, arcname=source.name)
    return archive


def config(**fields) -> DataConfig:
    fields.setdefault("root", Path("data/Task04_Hippocampus"))
    return DataConfig(**fields)


def test_local_copy_is_copied_then_reported_present(fake_msd: Path, project: Path) -> None:
    cfg = config(local_copy=fake_msd)
    result = fetch_dataset(cfg, project)
    root = project / "data/Task04_Hippocampus"
    assert (result.source, result.path) == ("local_copy", root)
    assert read_tree(root) == FAKE_FILES
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no staging folder left

    (fake_msd / "dataset.json").unlink()  # a second copy would now lose dataset.json
    again = fetch_dataset(cfg, project)
    assert again.source == "present"
    assert read_tree(root) == FAKE_FILES


@pytest.mark.parametrize("archive_name", ["Task04_Hippocampus.tar.gz", "Task04_Hippocampus.tar",
                                          "Task04_Hippocampus.zip"])
def test_download_lands_dataset_in_root(fake_msd, project, served, archive_name) -> None:
    folder, base_url = served
    archive = make_archive(fake_msd, folder / archive_name)
    cfg = config(local_copy=Path("../no/such/copy"), url=f"{base_url}/{archive_name}",
                 md5=md5sum(archive))
    lines: list[str] = []
    result = fetch_dataset(cfg, project, progress=lines.append)
    root = project / "data/Task04_Hippocampus"
    assert result.source == "download" and "verified" in result.message
    assert read_tree(root) == FAKE_FILES
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # archive and staging removed
    assert lines and "100%" in lines[-1]


def test_wrong_md5_is_refused_and_leaves_nothing(fake_msd, project, served) -> None:
    folder, base_url = served
    archive = make_archive(fake_msd, folder / "Task04_Hippocampus.tar")
    url = f"{base_url}/Task04_Hippocampus.tar"
    cfg = config(url=url, md5="0" * 32)
    with pytest.raises(AcquireError, match="md5") as caught:
        fetch_dataset(cfg, project, progress=lambda line: None)
    assert url in str(caught.value) and "0" * 32 in str(caught.value)
    assert md5sum(archive) in str(caught.value)
    assert list((project / "data").iterdir()) == []


def test_http_error_names_url(project, served) -> None:
    _, base_url = served
    cfg = config(url=f"{base_url}/missing.tar")
    with pytest.raises(AcquireError, match="404") as caught:
        fetch_dataset(cfg, project, progress=lambda line: None)
    assert cfg.url in str(caught.value)
    assert list((project / "data").iterdir()) == []


def test_neither_source_explains_both(project: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-copy"
    with pytest.raises(AcquireError) as caught:
        fetch_dataset(config(local_copy=missing), project)
    message = str(caught.value)
    assert str(missing) in message and "does not exist" in message and "data.url" in message
    assert not (project / "data/Task04_Hippocampus").exists()


def test_non_dataset_root_is_not_overwritten(fake_msd: Path, project: Path) -> None:
    root = project / "data/Task04_Hippocampus"
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    with pytest.raises(AcquireError, match="will not be overwritten"):
        fetch_dataset(config(local_copy=fake_msd), project)
    assert read_tree(root) == {"notes.txt": b"mine"}


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def write_tar(archive: Path, members: list[tarfile.TarInfo]) -> Path:
    """A tar holding the given members, each regular file with the content b"evil"."""
    with tarfile.open(archive, "w") as tar:
        for info in members:
            info.size = 4 if info.isfile() else 0
            tar.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    return archive


@pytest.mark.parametrize(
    "case", ["dotdot", "absolute", "symlink_out", "hardlink_out", "device"]
)
def test_unsafe_tar_is_refused_before_writing(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = {
        "dotdot": [tar_member("Task04/ok.txt"), tar_member("../outside/evil.txt")],
        "absolute": [tar_member(str(outside / "evil.txt"))],
        "symlink_out": [tar_member("link", tarfile.SYMTYPE, str(outside)),
                        tar_member("link/evil.txt")],
        "hardlink_out": [tar_member("evil.txt", tarfile.LNKTYPE, str(outside / "target"))],
        "device": [tar_member("null", tarfile.CHRTYPE)],
    }[case]
    dest = tmp_path / "dest"
    with pytest.raises(AcquireError, match="refus|only plain files"):
        safe_extract(write_tar(tmp_path / "bad.tar", members), dest)
    assert list(outside.iterdir()) == []
    assert list(dest.iterdir()) == []  # members are all checked before any is written


@pytest.mark.parametrize("name", ["../evil.txt", "/evil.txt", "Task04/../../evil.txt"])
def test_unsafe_zip_is_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("Task04/ok.txt", b"ok")
        zipped.writestr(name, b"evil")
    dest = tmp_path / "sub" / "dest"
    with pytest.raises(AcquireError, match="refusing"):
        safe_extract(archive, dest)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["bad.zip"]


def test_unsafe_download_leaves_no_trace(project, served) -> None:
    folder, base_url = served
    archive = write_tar(folder / "evil.tar", [tar_member("../../evil.txt")])
    cfg = config(url=f"{base_url}/evil.tar", md5=md5sum(archive))
    with pytest.raises(AcquireError, match="outside") as caught:
        fetch_dataset(cfg, project, progress=lambda line: None)
    assert cfg.url in str(caught.value)  # names the URL, not the deleted temporary file
    assert list((project / "data").iterdir()) == []
    assert not (project / "evil.txt").exists() and not (project.parent / "evil.txt").exists()


def test_archive_without_dataset_json_is_refused(tmp_path: Path, project, served) -> None:
    folder, base_url = served
    (tmp_path / "pack" / "imagesTr").mkdir(parents=True)
    (tmp_path / "pack" / "imagesTr" / "a.nii.gz").write_bytes(b"a")
    archive = make_archive(tmp_path / "pack", folder / "pack.tar.gz")
    cfg = config(url=f"{base_url}/pack.tar.gz", md5=md5sum(archive))
    with pytest.raises(AcquireError, match="dataset.json"):
        fetch_dataset(cfg, project, progress=lambda line: None)
    assert list((project / "data").iterdir()) == []


# --- expansion limits ---------------------------------------------------------------------------

ZEROS = 4 << 20  # 4 MiB of zeros: a few KiB compressed, over 500x


def compressible_archive(path: Path) -> Path:
    """A tiny archive of one highly compressible member (a miniature zip/gzip bomb)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.writestr("Task04/zeros.nii", bytes(ZEROS))
    else:
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("Task04/zeros.nii")
            info.size = ZEROS
            tar.addfile(info, io.BytesIO(bytes(ZEROS)))
    return path


@pytest.mark.parametrize("name", ["bomb.tar.gz", "bomb.zip"])
@pytest.mark.parametrize(("limits", "key"), [(ArchiveLimits(max_bytes=1 << 20), "data.archive_max_bytes"),
                                             (ArchiveLimits(max_ratio=50), "data.archive_max_ratio")])
def test_archive_expanding_past_a_limit_is_refused_before_writing(tmp_path, name, limits, key):
    archive = compressible_archive(tmp_path / name)
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveTooLarge) as caught:
        safe_extract(archive, dest, limits=limits)
    message = str(caught.value)
    assert str(archive) in message and "Task04/zeros.nii" in message and key in message
    assert list(dest.iterdir()) == []


def test_archive_within_the_limits_is_unpacked(tmp_path):
    archive = compressible_archive(tmp_path / "zeros.tar.gz")
    safe_extract(archive, tmp_path / "dest", limits=ArchiveLimits(max_bytes=ZEROS, max_ratio=10_000))
    assert (tmp_path / "dest" / "Task04/zeros.nii").stat().st_size == ZEROS


def test_a_member_outgrowing_its_header_is_stopped_while_writing(tmp_path):
    """Headers can lie: the bytes actually written are counted, whatever the header said."""
    meter = ExpansionMeter("delivery.zip", ArchiveLimits(), archive_bytes=1000)
    target = tmp_path / "member"
    with pytest.raises(ArchiveTooLarge, match="'a/member'.*10 bytes its header declares"):
        meter.copy(io.BytesIO(bytes(5000)), target, "a/member", declared=10)
    assert not target.exists()


def test_writing_stops_once_the_archive_outgrows_its_limit(tmp_path):
    meter = ExpansionMeter("delivery.tar", ArchiveLimits(max_bytes=3 << 20), archive_bytes=1 << 30)
    meter.copy(io.BytesIO(bytes(2 << 20)), tmp_path / "first", "first", declared=2 << 20)
    with pytest.raises(ArchiveTooLarge, match="'second'.*data.archive_max_bytes"):
        meter.copy(io.BytesIO(bytes(2 << 20)), tmp_path / "second", "second", declared=2 << 20)
    assert not (tmp_path / "second").exists() and meter.written <= (3 << 20) + CHUNK_BYTES


def test_download_honours_the_archive_limits_in_params(project, served) -> None:
    folder, base_url = served
    with tarfile.open(folder / "bomb.tar.gz", "w:gz") as tar:
        for name, content in {"Task04/dataset.json": b"{}", "Task04/zeros.nii": bytes(ZEROS)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    cfg = config(url=f"{base_url}/bomb.tar.gz", archive_max_ratio=50)
    with pytest.raises(ArchiveTooLarge, match="data.archive_max_ratio") as caught:
        fetch_dataset(cfg, project, progress=lambda line: None)
    assert cfg.url in str(caught.value)
    assert list((project / "data").iterdir()) == []


def test_a_zip_member_stored_as_a_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        info = zipfile.ZipInfo("Task04/imagesTr/a.nii.gz")
        info.external_attr = (0o120777 << 16)  # S_IFLNK: unzip would create a link to /etc/passwd
        zipped.writestr(info, "/etc/passwd")
    with pytest.raises(AcquireError, match="a link"):
        safe_extract(archive, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


# --- links in a local copy ----------------------------------------------------------------------


def test_local_copy_with_a_link_leaving_it_is_refused(fake_msd, project, tmp_path):
    (fake_msd / "imagesTr" / "hippocampus_002.nii.gz").symlink_to("/etc/passwd")
    with pytest.raises(AcquireError) as caught:
        fetch_dataset(config(local_copy=fake_msd), project)
    message = str(caught.value)
    assert "hippocampus_002.nii.gz" in message and "/etc/passwd" in message and "outside" in message
    assert not (project / "data").exists()  # refused before anything was copied


def test_local_copy_copies_links_inside_it_as_plain_files(fake_msd, project):
    (fake_msd / "imagesTr" / "hippocampus_002.nii.gz").symlink_to("hippocampus_001.nii.gz")
    (fake_msd / "imagesTr" / "hippocampus_003.nii.gz").symlink_to("no_such_file.nii.gz")  # dangling
    fetch_dataset(config(local_copy=fake_msd), project)
    images = project / "data/Task04_Hippocampus/imagesTr"
    copied = images / "hippocampus_002.nii.gz"
    assert not copied.is_symlink() and copied.read_bytes() == FAKE_FILES["imagesTr/hippocampus_001.nii.gz"]
    assert not (images / "hippocampus_003.nii.gz").exists()  # stays missing: validate reports it


def test_local_copy_with_a_folder_link_to_its_own_parent_is_refused(fake_msd, project):
    (fake_msd / "imagesTr" / "loop").symlink_to("..", target_is_directory=True)
    with pytest.raises(AcquireError, match="loop.*holding the link itself"):
        fetch_dataset(config(local_copy=fake_msd), project)
