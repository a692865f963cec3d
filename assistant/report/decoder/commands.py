"""``assistant train report`` and ``assistant eval report``: the IU X-ray decoder as a
product (weights, model card) from the committed split."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from assistant.config import Settings
from assistant.data.manifest import DataError, Manifest
from assistant.report.decoder.bundle import RELEASE_NAME, Drafter, ReportBundle
from assistant.report.decoder.data import (
    ReportRecord,
    manifest_sha256,
    read_reports,
    read_split,
    split_records,
)
from assistant.report.decoder.neighbours import ReportNeighbours
from assistant.report.decoder.train import Example, TrainReportConfig, train_decoder

log = logging.getLogger(__name__)
ARCHIVE = Path("iu_xray") / "NLMCXR_reports.tgz"


def release_report_path(settings: Settings) -> Path:
    """The report decoder the service and the commands use by default: the settings'
    ``report_checkpoint`` (``ASSISTANT_REPORT_CHECKPOINT``, a decoder trained on your own
    reports, say), else the release in ``weights_dir``."""
    return settings.report_checkpoint or settings.weights_dir / RELEASE_NAME


def load_split(settings: Settings) -> dict[str, list[ReportRecord]]:
    return split_records(read_reports(settings.data_dir / ARCHIVE), read_split())


def examples(records: list[ReportRecord], neighbours: ReportNeighbours | None = None,
             k: int = 0, leave_out: bool = False) -> list[Example]:
    """Training examples; with ``neighbours`` and ``k``, each carries its ``k`` nearest
    training reports (``leave_out``: never itself, for the training reports)."""
    return [Example(r.findings, r.indication, r.target, neighbours=tuple(
        neighbours.nearest(r.findings, k, exclude=r.uid if leave_out else None,
                           indication=r.indication))
        if neighbours is not None and k else ()) for r in records]


def report_drafter(settings: Settings, checkpoint: Path,
                   train: list[ReportRecord] | None = None) -> Drafter:
    """A drafter for a checkpoint; a retrieval decoder (or one that chooses among its
    nearest training reports) also gets its training reports
    (``train``, when the caller has read them already), read from the fetched IU X-ray
    archive (the reports are not redistributed with the weights: CC BY-NC-ND) and checked
    against the split manifest it was trained on."""
    from assistant.report.decoder.bundle import load_report_bundle

    bundle = load_report_bundle(checkpoint)
    if bundle.reads_training_reports is None:
        return Drafter(bundle)
    if bundle.provenance.get("split_manifest_sha256") != manifest_sha256():
        raise DataError(f"{checkpoint} reads the training reports of another split "
                        "manifest than the committed one: its neighbours cannot be rebuilt")
    if train is None:
        train = load_split(settings)["train"]
    expected = bundle.provenance.get("train_examples")
    if len(train) != expected:
        raise DataError(f"{checkpoint} was trained beside {expected} reports, the fetched "
                        f"archive gives {len(train)}")
    return Drafter(bundle, ReportNeighbours(train, bundle.model.config.retrieved_indication))


def provenance(settings: Settings) -> dict[str, Any]:
    manifest = Manifest.load(settings.data_dir)
    record = manifest.sources.get("iu-xray")
    if record is None:
        raise DataError("the IU X-ray reports are not fetched: run `assistant data fetch`")
    return {"name": "report-iu-xray", "data_source": f"iu-xray ({record.package}=="
            f"{record.version})", "data_files": record.files,
            "split_manifest_sha256": manifest_sha256(),
            "data_manifest_sha256": manifest.sha256(),
            "conditioning": "NLM MeSH finding codes (major) + INDICATION",
            "target": "FINDINGS + IMPRESSION",
            "command": "assistant " + " ".join(sys.argv[1:])}


def train_report(settings: Settings, cfg: TrainReportConfig, out: Path,
                 tune: bool = True, progress: bool = True) -> ReportBundle:
    from assistant.report.decoder.evaluate import tune_decoding

    split = load_split(settings)
    store = (ReportNeighbours(split["train"], cfg.retrieved_indication) if cfg.retrieved
             else None)
    bundle = train_decoder(examples(split["train"], store, cfg.retrieved, leave_out=True),
                           examples(split["val"], store, cfg.retrieved), cfg,
                           provenance(settings), progress=progress)
    if tune:
        bundle.decode, tuning = tune_decoding(Drafter(bundle, store), split["val"])
        bundle.provenance["decode_tuning"] = tuning
    sha = bundle.save(out)
    log.info("saved %s (sha256 %s): best epoch %s, %s s, decoding %s", out, sha,
             bundle.provenance["best_epoch"], bundle.provenance["train_seconds"],
             asdict(bundle.decode))
    return bundle


def retune_report(settings: Settings, checkpoint: Path, out: Path,
                  retrieved_indication: float | None = None, tune: bool = True,
                  neighbour_candidates: int | None = None, complete: bool | None = None,
                  ) -> ReportBundle:
    """The checkpoint's weights with its decoding settings tuned again on the validation
    reports (``tune_decoding``), written to ``out``; the weights are unchanged.
    ``retrieved_indication``: first set the weight of the indications' wording in ranking
    the neighbours a retrieval decoder reads and offers (``neighbours``); ``tune=False``
    keeps the decoding settings as they are, but for ``neighbour_candidates`` where given.
    ``complete``: first set whether drafts are completed against their findings (and so
    tuned with it)."""
    from assistant.report.decoder.evaluate import RETUNE_GRID, tune_decoding

    split = load_split(settings)
    drafter = report_drafter(settings, checkpoint, split["train"])
    bundle = drafter.bundle
    if bundle.provenance.get("split_manifest_sha256") != manifest_sha256():
        raise DataError(f"{checkpoint} was trained on another split manifest than the "
                        "committed one: its validation reports may be training reports")
    before, digest = bundle.decode, bundle.sha256
    config_before = bundle.model.config
    if complete is not None:
        bundle.decode = replace(bundle.decode, complete=complete)
    if retrieved_indication is not None:
        if not config_before.retrieved:
            raise DataError(f"{checkpoint} reads no neighbour reports: there is no ranking "
                            "of them to weigh the indication in")
        bundle.model.config = replace(config_before, retrieved_indication=retrieved_indication)
    if tune:
        weight = bundle.model.config.retrieved_indication
        store = drafter.neighbours
        if store is None or store.indication_weight != weight:
            store = ReportNeighbours(split["train"], weight)
        bundle.decode, tuning = tune_decoding(Drafter(bundle, store), split["val"], RETUNE_GRID)
        bundle.provenance["decode_tuning"] = tuning
    elif neighbour_candidates is not None:
        bundle.decode = replace(bundle.decode, neighbour_candidates=neighbour_candidates)
    bundle.provenance["decoding_retuned"] = {
        "from_sha256": digest, "before": before.to_dict(),
        "retrieved_indication_before": config_before.retrieved_indication,
        "tuned": tune, "command": "assistant " + " ".join(sys.argv[1:])}
    sha = bundle.save(out)
    log.info("saved %s (sha256 %s): decoding %s, was %s; neighbours' indication weight %s",
             out, sha, bundle.decode.to_dict(), before.to_dict(),
             bundle.model.config.retrieved_indication)
    return bundle


def eval_report(settings: Settings, checkpoint: Path, out: Path, n_boot: int,
                card: Path | None) -> dict[str, Any]:
    from assistant.report.decoder.card import write_card
    from assistant.report.decoder.evaluate import evaluate, table

    split = load_split(settings)
    drafter = report_drafter(settings, checkpoint, split["train"])
    bundle = drafter.bundle
    if bundle.provenance.get("split_manifest_sha256") not in (None, manifest_sha256()):
        log.warning("%s was trained on another split manifest: test reports may have been "
                    "seen in training", checkpoint)
    results = evaluate(drafter, split, n_boot)
    results.update({"checkpoint": str(checkpoint), "sha256": bundle.sha256,
                    "command": "assistant " + " ".join(sys.argv[1:])})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    log.info("results written to %s", out)
    print(table(results))
    print(f"\nwithout the {results['leaked']} test reports found word for word in "
          "training:")
    print(table(results, "without_leaked"))
    if card is not None:
        write_card(card, bundle, results)
    return results


def train_report_pairs(settings: Settings, pairs: Path, cfg: TrainReportConfig, out: Path,
                       vision_checkpoint: Path | None = None, progress: bool = True,
                       ) -> ReportBundle:
    """Image-conditioned training on a user's paired set (see ``paired``): the vision
    model's encoder (release, or ``vision_checkpoint``) supplies the patch tokens; one in
    ten pairs (at least one) is held out for validation, chosen with the seed."""
    import random

    from assistant.report.decoder.paired import image_tokens, paired_examples, read_pairs
    from assistant.vision.checkpoint import load_bundle, release_path

    rows = read_pairs(pairs)
    if len(rows) < 2:
        raise DataError(f"{pairs}: a paired set needs at least 2 rows, got {len(rows)}")
    vision_path = vision_checkpoint or release_path(settings)
    vision = load_bundle(vision_path)
    data = paired_examples(rows, image_tokens(vision, [r.image for r in rows], settings))
    order = list(range(len(data)))
    random.Random(cfg.seed).shuffle(order)
    n_val = max(1, len(data) // 10)
    val, train = [data[i] for i in order[:n_val]], [data[i] for i in order[n_val:]]
    prov = {"name": "report-paired", "data_source": f"paired set {pairs.name}",
            "pairs_sha256": hashlib.sha256(pairs.read_bytes()).hexdigest(),
            "image_encoder": {"name": vision.name, "sha256": vision.sha256},
            "conditioning": "finding codes + INDICATION + image patch tokens",
            "target": "findings + impression",
            "command": "assistant " + " ".join(sys.argv[1:])}
    bundle = train_decoder(train, val, cfg, prov, progress=progress)
    bundle.save(out)
    log.info("saved %s (sha256 %s)", out, bundle.sha256)
    return bundle
