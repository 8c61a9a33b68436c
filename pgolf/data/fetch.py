"""`pgolf data fetch`: the challenge's FineWeb exports from the Hugging Face Hub, laid out as its downloader does.

Where the files come from (facts of the challenge's data/cached_challenge_fineweb.py): the dataset repo
`willdepueoai/parameter-golf` (env MATCHED_FINEWEB_REPO_ID), under the remote prefix `datasets` (env
MATCHED_FINEWEB_REMOTE_ROOT_PREFIX). `<prefix>/manifest.json` lists the exports (`datasets`: name
`fineweb10B_<variant>`, `tokenizer_name`, `stats.files_train`, `stats.files_val`) and the tokenizers
(`tokenizers`: `name`, and its files under `model_path`, `vocab_path` or `path`, relative to the prefix).
Shards are `<prefix>/datasets/fineweb10B_<variant>/fineweb_{val,train}_NNNNNN.bin`. Under the data root
`out` a remote path loses its prefix: `manifest.json`, `datasets/fineweb10B_<variant>/`, `tokenizers/`,
which is what `data=fineweb_<variant>` reads. The whole validation split is fetched, and the first
`train_shards` training shards (the frozen shuffled order, so N shards are the baseline's first N).

What pgolf adds to the challenge's downloader:
- Atomic and resumable. Only missing or bad files are downloaded; each goes through
  `hf_hub_download(local_dir=<out>/.fetch)` (a staging folder on the same file system), is checked
  there and renamed into place, so a final path never holds a half file. The staging folder is
  removed when the fetch ends, however it ends. A complete fetch re-runs without the network.
- Every file is checked, present or downloaded: a shard by its header and size (`read_shard`) and
  against the size recorded when it was fetched, a tokenizer by loading it, the manifest by parsing
  it. A bad file already present is deleted and fetched again; a download that fails its check is
  fetched once more bypassing the Hugging Face cache, then is a DataError naming the file.
- A local manifest is reused (the challenge's downloader does the same), unless it does not list the
  variant or has fewer training shards than asked: then it is downloaded again (the export may have grown).
- One source per data root. `datasets/fineweb10B_<variant>/fetch.json` (written atomically, updated
  as each file lands) records the repo id, the remote prefix, the variant and the byte size of each
  file fetched. Before any download, a fetch stops when `out` is itself a data folder (it holds shards,
  `meta.json`, `tokenizer.model` or `fetch.json`), when a dataset folder in the root records another
  repo or prefix (the root's manifest.json would be the wrong one), or when the variant's folder has no
  fetch.json and holds anything but challenge shard names (a `pgolf data prepare` folder, say). A
  folder of shards only, as the challenge's downloader leaves it, is adopted, each shard checked.
huggingface_hub is imported inside `fetch_data` only.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from pgolf.atomic import atomic_write_json
from pgolf.data.shards import FINEWEB_VARIANTS, read_shard
from pgolf.data.tokenizer import load_pure_byte_tokenizer, load_tokenizer
from pgolf.errors import DataError, UsageError
from pgolf.progress import ProgressFn, no_progress

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_REMOTE_PREFIX = "datasets"
DEFAULT_TRAIN_SHARDS = 80
"""The challenge's downloader default: 8B training tokens."""
MARKER = "fetch.json"
STAGING = ".fetch"
_SHARD_NAME = re.compile(r"fineweb_(?:train|val)_\d{6}\.bin")
_DATA_FOLDER_FILES = ("meta.json", "tokenizer.model", MARKER)
"""Files that make a folder a data folder (fetch's marker, `pgolf data prepare`'s), not a data root."""
_TOKENIZER_KEYS = ("model_path", "vocab_path", "path")


@dataclass(frozen=True)
class FetchedData:
    """What `fetch_data` left in the data root (the files it was asked for)."""

    dir: Path
    tokenizer: Path
    train_files: list[Path]
    val_files: list[Path]
    train_tokens: int
    val_tokens: int
    downloaded: int
    """Files this call downloaded (0 when every file was present and sound)."""


@dataclass(frozen=True)
class _Source:
    repo_id: str
    remote_prefix: str

    def remote(self, relative: str) -> str:
        return f"{self.remote_prefix}/{relative}" if self.remote_prefix else relative


@dataclass(frozen=True)
class _Wanted:
    remote: str
    """Path in the repo."""
    relative: str
    """Path under the data root (the remote path without the prefix)."""
    kind: str
    """How the file is checked: as a shard, a tokenizer or the manifest ("shard", "tokenizer", "manifest")."""


def dataset_dir_name(variant: str) -> str:
    """The export's folder name, locally and in the repo."""
    return f"fineweb10B_{variant}"


def fetch_data(variant: str = "sp1024", train_shards: int = DEFAULT_TRAIN_SHARDS, out: Path | str = "data",
               progress: ProgressFn = no_progress) -> FetchedData:
    """Download (or complete) one FineWeb variant into the data root `out`; see the module docstring."""
    if variant not in FINEWEB_VARIANTS:
        raise UsageError(f"unknown variant {variant!r}; the challenge publishes {', '.join(FINEWEB_VARIANTS)}")
    if train_shards < 0:
        raise UsageError(f"--train-shards must be >= 0, got {train_shards}")
    out = Path(out)
    source = _Source(os.environ.get("MATCHED_FINEWEB_REPO_ID", DEFAULT_REPO_ID),
                     os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", DEFAULT_REMOTE_PREFIX).strip("/"))
    dataset_dir = out / "datasets" / dataset_dir_name(variant)
    _check_data_root(out, source)
    marker = _read_marker(dataset_dir, source, variant)

    import huggingface_hub as hub

    made_out = not out.exists()
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with _quiet_hub():
            fetcher = _Fetcher(hub, source, out, staging, dataset_dir, marker)
            manifest = fetcher.manifest(variant, train_shards)
            wanted = _wanted_files(manifest, source, variant, train_shards)
            tokens = fetcher.get_all(wanted, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    shards = [w for w in wanted if w.kind == "shard"]
    train = [w for w in shards if "_train_" in w.relative]
    val = [w for w in shards if "_val_" in w.relative]
    tokenizer = next(w for w in wanted if w.kind == "tokenizer" and not w.relative.endswith(".vocab"))
    return FetchedData(dir=dataset_dir, tokenizer=out / tokenizer.relative,
                       train_files=[out / w.relative for w in train], val_files=[out / w.relative for w in val],
                       train_tokens=sum(tokens[w.relative] for w in train),
                       val_tokens=sum(tokens[w.relative] for w in val), downloaded=fetcher.downloaded)


def _check_data_root(out: Path, source: _Source) -> None:
    """`out` must be a data root, and every dataset folder in it must come from `source`."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    if not out.is_dir():
        return
    held = [name for name in _DATA_FOLDER_FILES if (out / name).is_file()] + sorted(
        p.name for p in out.glob("*.bin"))[:1]
    if held:
        raise DataError(f"--out {out} is a data folder (it holds {held[0]}), not a data root: pass the folder that "
                        f"holds datasets/ and tokenizers/ (default: data)")
    for marker_path in sorted(out.glob(f"datasets/*/{MARKER}")):
        recorded = _load_marker(marker_path)
        if (recorded.get("repo_id"), recorded.get("remote_prefix")) != (source.repo_id, source.remote_prefix):
            raise DataError(f"{out} holds {marker_path.parent.name} fetched from {recorded.get('repo_id')} "
                            f"(prefix {recorded.get('remote_prefix')!r}), not {source.repo_id} "
                            f"(prefix {source.remote_prefix!r}): one source per data root, so use another --out")


def _load_marker(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is unreadable ({exc}); delete it to check the folder's shards again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise DataError(f"{path} is not a pgolf fetch record; delete it to check the folder's shards again")
    return data


def _read_marker(dataset_dir: Path, source: _Source, variant: str) -> dict[str, Any]:
    """The folder's fetch record, a fresh one for a new folder or one of challenge shards only."""
    marker_path = dataset_dir / MARKER
    if marker_path.is_file():
        recorded = _load_marker(marker_path)
        if recorded.get("variant") != variant:
            raise DataError(f"{dataset_dir} holds the {recorded.get('variant')} variant (its {MARKER}), "
                            f"not {variant}: use another --out")
        return recorded
    if dataset_dir.exists():
        if not dataset_dir.is_dir():
            raise DataError(f"{dataset_dir} is a file, not a dataset folder")
        foreign = sorted(p.name for p in dataset_dir.iterdir()
                         if not p.name.startswith(".") and not _SHARD_NAME.fullmatch(p.name))
        if foreign:
            raise DataError(f"{dataset_dir} was not made by `pgolf data fetch` (it holds {foreign[0]}, and no "
                            f"{MARKER}): move it away or fetch into another --out")
    return {"repo_id": source.repo_id, "remote_prefix": source.remote_prefix, "variant": variant, "files": {}}


def _wanted_files(manifest: dict[str, Any], source: _Source, variant: str, train_shards: int) -> list[_Wanted]:
    """Validation shards, the first `train_shards` training shards and the tokenizer's files, in that order."""
    entry = _dataset_entry(manifest, variant)
    files_train, files_val = _shard_counts(entry, source, variant)
    if train_shards > files_train:
        raise DataError(f"{variant} has {files_train} training shards on {source.repo_id}, asked for {train_shards}")
    folder = f"datasets/{dataset_dir_name(variant)}"
    wanted = [_Wanted(source.remote(f"{folder}/fineweb_val_{i:06d}.bin"), f"{folder}/fineweb_val_{i:06d}.bin",
                      "shard") for i in range(files_val)]
    wanted += [_Wanted(source.remote(f"{folder}/fineweb_train_{i:06d}.bin"), f"{folder}/fineweb_train_{i:06d}.bin",
                       "shard") for i in range(train_shards)]
    name = entry.get("tokenizer_name")
    tokenizer = next((t for t in manifest.get("tokenizers") or [] if isinstance(t, dict) and t.get("name") == name),
                     None)
    paths = [str(tokenizer[key]) for key in _TOKENIZER_KEYS if tokenizer and tokenizer.get(key)]
    if not paths or all(p.endswith(".vocab") for p in paths):
        raise DataError(f"manifest.json of {source.repo_id} lists no tokenizer file for {variant} "
                        f"(tokenizer {name!r})")
    relatives = [_safe_relative(path, source) for path in paths]
    return wanted + [_Wanted(source.remote(relative), relative, "tokenizer") for relative in relatives]


def _dataset_entry(manifest: dict[str, Any], variant: str) -> dict[str, Any] | None:
    name = dataset_dir_name(variant)
    return next((d for d in manifest.get("datasets") or [] if isinstance(d, dict) and d.get("name") == name), None)


def _shard_counts(entry: dict[str, Any] | None, source: _Source, variant: str) -> tuple[int, int]:
    if entry is None:
        raise DataError(f"{source.remote('manifest.json')} of {source.repo_id} does not list "
                        f"{dataset_dir_name(variant)}")
    stats = entry.get("stats") if isinstance(entry.get("stats"), dict) else {}
    counts = stats.get("files_train"), stats.get("files_val")
    if not all(isinstance(c, int) and c >= 0 for c in counts):
        raise DataError(f"manifest.json of {source.repo_id}: {dataset_dir_name(variant)} has no shard counts "
                        f"(stats.files_train, stats.files_val)")
    return counts


def _safe_relative(path: str, source: _Source) -> str:
    """A manifest path as a path under the data root; one that would leave it is a DataError."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts:
        raise DataError(f"manifest.json of {source.repo_id} lists the path {path!r}, which leaves the data root")
    return PurePosixPath(*parts).as_posix()


def _check(path: Path, kind: str) -> int:
    """Tokens of a sound shard (0 for other files); a DataError says what is wrong."""
    if kind == "shard":
        return int(read_shard(path).size)
    if kind == "manifest":
        _parse_manifest(path)
    elif path.suffix == ".json":
        load_pure_byte_tokenizer(path)
    elif path.suffix == ".model":
        load_tokenizer(path)
    return 0


def _parse_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("datasets"), list):
        raise DataError(f"{path} is not a challenge manifest (no `datasets` list)")
    return manifest


class _Fetcher:
    """Downloads through a staging folder, checks, lands files and keeps the fetch record."""

    def __init__(self, hub: ModuleType, source: _Source, out: Path, staging: Path, dataset_dir: Path,
                 marker: dict[str, Any]):
        self.hub, self.source, self.out, self.staging = hub, source, out, staging
        self.marker_path = dataset_dir / MARKER
        self.marker = marker
        self.downloaded = 0

    def manifest(self, variant: str, train_shards: int) -> dict[str, Any]:
        """The local manifest when it serves the request, else a fresh one."""
        wanted = _Wanted(self.source.remote("manifest.json"), "manifest.json", "manifest")
        path = self.out / wanted.relative
        if path.is_file():
            try:
                manifest = _parse_manifest(path)
                entry = _dataset_entry(manifest, variant)
                if entry is not None and _shard_counts(entry, self.source, variant)[0] >= train_shards:
                    return manifest
            except DataError:
                pass
        self.land(wanted, record=False)
        return _parse_manifest(path)

    def get_all(self, wanted: list[_Wanted], progress: ProgressFn) -> dict[str, int]:
        """Tokens per file, after making every wanted file present and sound (and recorded)."""
        tokens: dict[str, int] = {}
        self.save_marker()
        for done, item in enumerate(wanted):
            progress("fetch", done, len(wanted), file=PurePosixPath(item.relative).name)
            present = self.present_tokens(item)
            tokens[item.relative] = present if present is not None else self.land(item)
        self.marker["files"].update({w.relative: (self.out / w.relative).stat().st_size for w in wanted})
        self.save_marker()
        progress("fetch", len(wanted), len(wanted), file="done")
        return tokens

    def present_tokens(self, item: _Wanted) -> int | None:
        """Tokens of the file at its final path when it is sound; a bad one is deleted (None)."""
        path = self.out / item.relative
        if not path.is_file():
            return None
        recorded = self.marker["files"].get(item.relative)
        if recorded is None or path.stat().st_size == recorded:
            try:
                return _check(path, item.kind)
            except DataError:
                pass
        path.unlink()
        return None

    def land(self, item: _Wanted, record: bool = True) -> int:
        """Download `item`, check it in the staging folder, rename it into place; its tokens."""
        final = self.out / item.relative
        for force in (False, True):
            staged = self.download(item, force)
            try:
                tokens = _check(staged, item.kind)
                break
            except DataError as exc:
                staged.unlink(missing_ok=True)
                if force:
                    detail = str(exc).replace(str(staged), staged.name)
                    raise DataError(f"{item.remote} downloaded from {self.source.repo_id} is corrupt ({detail}); "
                                    f"nothing was written to {final}") from exc
        _move_into_place(staged, final)
        self.downloaded += 1
        if record:
            self.marker["files"][item.relative] = final.stat().st_size
            self.save_marker()
        return tokens

    def save_marker(self) -> None:
        atomic_write_json(self.marker_path, self.marker)

    def download(self, item: _Wanted, force: bool) -> Path:
        folder, _, name = item.remote.rpartition("/")
        try:
            return Path(self.hub.hf_hub_download(repo_id=self.source.repo_id, filename=name, subfolder=folder or None,
                                                 repo_type="dataset", local_dir=self.staging, force_download=force))
        except _hub_errors() as exc:
            failure = _hub_failure(exc, self.source, item.remote)
            if failure is None:
                raise
            raise failure from exc


def _move_into_place(staged: Path, final: Path) -> None:
    """Rename `staged` to `final` atomically (through a temporary copy beside `final` across file systems)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staged, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temporary = final.with_name(f".{final.name}.fetch.tmp")
        shutil.copyfile(staged, temporary)
        os.replace(temporary, final)
        staged.unlink()


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's own bars and warnings off while fetching (pgolf's progress bar and errors speak)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from huggingface_hub.utils import logging as hub_logging

    verbosity, bars_were_off = hub_logging.get_verbosity(), are_progress_bars_disabled()
    hub_logging.set_verbosity_error()
    disable_progress_bars()
    try:
        yield
    finally:
        hub_logging.set_verbosity(verbosity)
        if not bars_were_off:
            enable_progress_bars()


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What a download raises for the network or the repo: huggingface_hub's errors, OS errors, and the HTTP
    client's (httpx in recent huggingface_hub; requests, whose errors are OSErrors, in older ones)."""
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError

    return (HfHubHTTPError, EntryNotFoundError, OSError, ValueError, *_client_errors())


def _client_errors() -> tuple[type[BaseException], ...]:
    return tuple(sys.modules[name].HTTPError for name in ("httpx", "httpx2") if name in sys.modules)


def _hub_failure(exc: BaseException, source: _Source, remote: str) -> DataError | None:
    """A one-line DataError for a failed download that says what to do; None for an error that is a bug."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if type(exc) is ValueError:
        if exc.__cause__ is None:
            return None
        exc = exc.__cause__  # force_download wraps the error of its metadata request
    endpoint, repo = constants.ENDPOINT, source.repo_id
    cause = exc.__cause__ or exc
    first_line = (str(cause).strip().splitlines() or ["no detail"])[0]
    if isinstance(exc, HFValidationError):
        return DataError(f"{repo!r} is not a Hugging Face repo id: set MATCHED_FINEWEB_REPO_ID to owner/name")
    if isinstance(exc, RepositoryNotFoundError):
        return DataError(f"dataset repo {repo} not found on {endpoint} (or private): check MATCHED_FINEWEB_REPO_ID")
    if isinstance(cause, OfflineModeIsEnabled):
        return DataError(f"cannot download {remote} from {repo}: HF_HUB_OFFLINE is set (unset it to download)")
    network = (ConnectionError, TimeoutError, *_client_errors())
    if isinstance(exc, LocalEntryNotFoundError) or (isinstance(exc, network) and not isinstance(exc, HfHubHTTPError)):
        return DataError(f"cannot download {remote} from {repo} on {endpoint} ({type(cause).__name__}: "
                         f"{first_line}): check the network, HF_ENDPOINT and MATCHED_FINEWEB_REPO_ID")
    if isinstance(exc, EntryNotFoundError):
        return DataError(f"{repo} on {endpoint} has no file {remote}: check MATCHED_FINEWEB_REMOTE_ROOT_PREFIX "
                         f"(now {source.remote_prefix!r})")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", "?")
        return DataError(f"download of {remote} from {repo} on {endpoint} failed with HTTP {status}")
    if isinstance(exc, ValueError):
        return None
    return DataError(f"download of {remote} from {repo} failed ({type(exc).__name__}: {first_line})")
