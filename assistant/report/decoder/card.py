"""The report decoder's model card, written by ``assistant eval report --card``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assistant.report.decoder.bundle import ReportBundle


def write_card(path: Path, bundle: ReportBundle, results: dict[str, Any]) -> None:
    from assistant.report.decoder.evaluate import table

    p, cfg = bundle.provenance, bundle.model.config
    params = sum(t.numel() for t in bundle.model.parameters())
    lines = [
        f"# Model card: {bundle.name}", "",
        "Drafts the FINDINGS and IMPRESSION of a chest X-ray report from finding codes (and "
        "the indication). **A draft for a clinician to verify**, never a diagnosis.", "",
        "## What it is", "",
        f"- A GPT-2-style decoder ({cfg.decoder_layers} blocks, width {cfg.width}, "
        f"{cfg.heads} heads) cross-attending to a {cfg.encoder_layers}-layer encoder of the "
        f"finding and indication tokens; {params:,} parameters; word vocabulary "
        f"{cfg.text_vocab} tokens.",
        *([f"- Retrieval: the memory also holds the {cfg.retrieved} nearest training "
           f"report(s) by their codes"
           + (f" and, weighted {cfg.retrieved_indication}, the wording of their indications"
              if cfg.retrieved_indication else "")
           + f" (at most {cfg.retrieved_len} word tokens in all; "
           "`neighbours.py`), a training report never its own; the reports are read from "
           "the fetched IU X-ray archive when the decoder loads, never stored with the "
           "weights." + (" Each next word mixes the vocabulary softmax with a copy "
                         "distribution over the neighbours' words (a learned gate)."
                         if cfg.copy else "")] if cfg.retrieved else []),
        f"- Trained on {p.get('data_source')}: {p.get('train_examples')} training and "
        f"{p.get('val_examples')} validation reports of the committed split "
        f"(`assistant/report/decoder/iu_split.csv`, sha256 {p.get('split_manifest_sha256')}); "
        f"data manifest sha256 {p.get('data_manifest_sha256')}.",
        f"- Best epoch {p.get('best_epoch')} (validation loss {p.get('best_val_loss', 0):.4f}); "
        f"training took {p.get('train_seconds')} s on 2 CPU cores.",
        f"- Decoding (tuned on validation): {bundle.decode.to_dict()}.",
        *([f"- The report kept is, among the finished beams and then the "
           f"{bundle.decode.neighbour_candidates} nearest training report(s), the first whose "
           "asserted findings agree best with the conditioning: a training report's text, "
           "word for word, when it agrees better than every beam."]
          if bundle.decode.neighbour_candidates and bundle.decode.consistent else []),
        *(["- Completion (`complete.py`): the kept report loses its sentences that assert a "
           "finding not given or deny one given, and gains, for each given finding it leaves "
           "out, one sentence of a nearby training report coded with the same term, only "
           "where the study's codes back every location, extent and descriptor word in it "
           "(no numbers, comparisons, hedges or devices). The service names each borrowed "
           "sentence with its source report."] if bundle.decode.complete else []),
        f"- Checkpoint sha256 {bundle.sha256}.", "",
        "## Reproduce", "", "```", str(p.get("command")),
        *([str(p["decoding_retuned"]["command"])] if "decoding_retuned" in p else []),
        str(results.get("command")), "```",
        "", f"## Held-out test reports ({results['test_reports']})", "",
        table(results), "",
        f"{results['leaked']} test reports appear word for word among the training reports. "
        "Without them:", "", table(results, "without_leaked"), "",
        "Findings F1: the negation-aware matcher (`assistant/report/decoder/findings.py`) "
        "reads the finding classes a text asserts and compares them with the classes of the "
        "conditioning codes. On the reference reports themselves it scores "
        f"{results['matcher_on_references']['f1']:.3f}."
        + (" Completion drops and borrows sentences by the same matcher, so the decoder's "
           "F1 is partly the matcher agreeing with itself; the row without completion gives "
           "the F1 of the decoded text." if bundle.decode.complete else ""), "",
        "## Limits", "",
        "- Conditioned on codes, not on pixels: it drafts what the codes say; it cannot see "
        "what the codes miss.",
        "- The training reports are de-identified: the decoder writes `XXXX` where the "
        "collection redacted words.",
        "- IU X-ray reports are CC BY-NC-ND 4.0; the weights are trained on them.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
