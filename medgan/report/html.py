"""A self-contained HTML report of a results folder: pictures, metric tables, safety and provenance.

The page has no external asset and no JavaScript: PNG montages are embedded as base64 data URIs and
the style sheet is inline, so the file can be mailed, archived or opened offline. Sections:

1. a banner saying the outputs are synthetic (and any ``notes`` the sidecars carry);
2. the run summary (``summary.csv``) when present;
3. metrics: ``evaluation.csv`` / ``evaluation.summary.json`` from ``medgan evaluate`` when present,
   otherwise computed here for every case with a reference, for the output and, beside it, for the
   input (the unprocessed baseline) when it lies on the reference grid;
4. safety: input-contract flags (inputs run with ``--force``), uncertainty scores, lesion tables;
5. provenance: bundle, version, weights sha256, inputs and their sha256, device, timing, time stamp;
6. one montage per case (rows axial / coronal / sagittal; columns input, output, reference,
   difference, uncertainty, as available).
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from medgan.errors import MedganError
from medgan.report.display import DisplaySettings, display_for_task
from medgan.report.layout import (EVALUATION_CSV, EVALUATION_SUMMARY, RUN_SUMMARY, ResultsCase, find_cases,
                                  read_csv_rows)
from medgan.report.montage import VIEWS, Panel, body_centre_mm, render_case_montage
from medgan.utils.atomic import atomic_path

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["CENTRE_BODY", "CENTRE_LESION", "DEFAULT_PROFILE", "build_report", "case_panels"]

logger = logging.getLogger(__name__)

CENTRE_BODY = "body"
CENTRE_LESION = "lesion"
#: Metric profile used when metrics are computed here.
DEFAULT_PROFILE = "raw"

_CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #999;margin-top:32px}h3{font-size:15px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:11px;word-break:break-all}
.banner{background:#fff3cd;border:2px solid #c99a00;padding:10px 14px;font-weight:bold}
.note{background:#fde2e1;border:1px solid #c0392b;padding:6px 10px;margin:6px 0}
.ok{color:#1e7b34}.flag{color:#b00020;font-weight:bold}
img{max-width:100%;height:auto;border:1px solid #ccc}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    if isinstance(value, str) and _is_number(value):
        return f'<td class="num">{_esc(value)}</td>'
    if isinstance(value, (dict, list)):
        return f"<td><code>{_esc(json.dumps(value))}</code></td>"
    return f"<td>{_esc(value)}</td>"


def _is_number(text: str) -> bool:
    if len(text) > 24:  # hashes and identifiers are text even when all digits
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c, "")) for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _load(path: Path):
    from medgan.io import load_volume

    return load_volume(path)


def _numpy(volume) -> np.ndarray:
    from medgan.metrics.masks import as_numpy

    return np.asarray(as_numpy(volume), dtype=np.float32)


def _affine(volume) -> np.ndarray:
    affine = volume.affine
    return np.asarray(affine.detach().cpu().numpy() if hasattr(affine, "detach") else affine, dtype=np.float64)


def _same_grid(first, second) -> bool:
    return tuple(first.shape) == tuple(second.shape) and np.allclose(_affine(first), _affine(second), atol=1e-3)


def _is_ct(volume) -> bool:
    from medgan.manifest.images import detect_modality

    modality = str(getattr(volume, "meta", {}).get("Modality") or "").upper()
    if modality:
        return modality == "CT"
    array = _numpy(volume)
    return detect_modality(array[::2, ::2, ::2])[0] == "CT"


def case_panels(case: ResultsCase, display: DisplaySettings) -> Tuple[List[Panel], Dict[str, Any]]:
    """Load a case's volumes and make its montage columns.

    Returns:
        ``(panels, volumes)``: the panels in column order and the loaded volumes by role (``pred``,
        ``input``, ``reference``, ``uncertainty``).
    """
    window = display.window
    volumes: Dict[str, Any] = {"pred": _load(case.pred)}
    for role in ("input", "reference", "uncertainty"):
        path = getattr(case, role)
        if path is not None:
            volumes[role] = _load(path)
    pred = volumes["pred"]
    panels: List[Panel] = []
    if "input" in volumes:
        source = volumes["input"]
        if _is_ct(source):
            panels.append(Panel("input", _numpy(source), _affine(source), "ct", window.limits, label=window.label()))
        else:
            values = _numpy(source)
            low, high = np.percentile(values[::2, ::2, ::2], display.mr_percentiles)
            label = f"MR p{display.mr_percentiles[0]:g}-p{display.mr_percentiles[1]:g}"
            panels.append(Panel("input", values, _affine(source), "mr", (float(low), float(high)), label=label))
    panels.append(Panel("output (synthetic)", _numpy(pred), _affine(pred), "ct", window.limits, label=window.label()))
    if "reference" in volumes:
        reference = volumes["reference"]
        panels.append(Panel("reference", _numpy(reference), _affine(reference), "ct", window.limits,
                            label=window.label()))
    against = None
    if "reference" in volumes and _same_grid(pred, volumes["reference"]):
        against = "reference"
    elif "reference" in volumes:
        logger.warning("%s: reference is not on the output grid; no difference image", case.case_id)
    elif "input" in volumes and panels[0].kind == "ct" and _same_grid(pred, volumes["input"]):
        against = "input"
    if against is not None:
        limit = display.difference_hu
        panels.append(Panel(f"difference (output - {against})", _numpy(pred) - _numpy(volumes[against]),
                            _affine(pred), "difference", (-limit, limit), cmap=display.difference_cmap,
                            label=f"HU, -{limit:g} to +{limit:g}"))
    if "uncertainty" in volumes:
        unc = volumes["uncertainty"]
        panels.append(Panel("uncertainty (SD)", _numpy(unc), _affine(unc), "uncertainty",
                            (0.0, display.uncertainty_hu), cmap=display.uncertainty_cmap,
                            label=f"HU, 0 to {display.uncertainty_hu:g}"))
    return panels, volumes


def _centre(case: ResultsCase, volumes: Mapping[str, Any], centre: Union[str, Sequence[float]]) -> np.ndarray:
    if not isinstance(centre, str):
        return np.asarray(centre, dtype=np.float64)
    if centre == CENTRE_LESION:
        lesions = case.sidecar.get("lesions") or []
        located = [lesion for lesion in lesions if isinstance(lesion, dict) and lesion.get("centre_ras_mm")]
        if located:
            return np.asarray(located[0]["centre_ras_mm"], dtype=np.float64)
        logger.warning("%s: no lesion with centre_ras_mm in the sidecar; centring on the body", case.case_id)
    elif centre != CENTRE_BODY:
        raise MedganError(f"unknown montage centre {centre!r}", fix="use body, lesion or three RAS coordinates in mm")
    basis = volumes.get("reference", volumes["pred"])
    return body_centre_mm(_numpy(basis), _affine(basis), is_ct=True)


def _computed_metrics(case: ResultsCase, volumes: Mapping[str, Any], profile: str) -> List[Dict[str, Any]]:
    from medgan.metrics import PROFILES, body_mask_from_ct, evaluate_pair

    reference = volumes.get("reference")
    if reference is None or not _same_grid(volumes["pred"], reference):
        return []
    mask = None
    if PROFILES[profile].uses_mask:
        mask = _numpy(_load(case.mask)) > 0 if case.mask is not None else body_mask_from_ct(_numpy(reference))
    rows = [{"case_id": case.case_id, "image": "output", **evaluate_pair(volumes["pred"], reference, profile, mask)}]
    source = volumes.get("input")
    if source is not None and _same_grid(source, reference) and _is_ct(source):
        rows.append({"case_id": case.case_id, "image": "input (baseline)",
                     **evaluate_pair(source, reference, profile, mask)})
    return rows


def _png_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _safety_rows(cases: Sequence[ResultsCase]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    safety, lesions = [], []
    for case in cases:
        check = case.sidecar.get("input_check") or {}
        flags = check.get("flags") or []
        uncertainty = case.sidecar.get("uncertainty") or {}
        safety.append({
            "case_id": case.case_id,
            "input check": ("FORCED past: " + "; ".join(
                f"{f.get('check')}: {f.get('found')} (accepts {f.get('accepted')})" for f in flags))
            if flags else ("passed" if check else "not recorded"),
            "uncertainty score": uncertainty.get("score", ""),
            "uncertainty method": uncertainty.get("method", ""),
        })
        for lesion in case.sidecar.get("lesions") or []:
            if isinstance(lesion, dict):
                lesions.append({"case_id": case.case_id, **lesion})
    return safety, lesions


def _provenance_rows(cases: Sequence[ResultsCase]) -> List[Dict[str, Any]]:
    rows = []
    for case in cases:
        side = case.sidecar
        bundle = side.get("bundle") or {}
        inputs = side.get("inputs") or []
        timing = side.get("timing_s") or {}
        rows.append({
            "case_id": case.case_id,
            "synthetic": side.get("synthetic", "not recorded"),
            "bundle": f"{bundle.get('name', '?')} v{bundle.get('version', '?')}" if bundle else "not recorded",
            "weights sha256": bundle.get("weights_sha256", ""),
            "inputs (sha256)": "; ".join(f"{i.get('path')} ({i.get('sha256')})" for i in inputs),
            "device": side.get("device", ""),
            "time (s)": round(float(sum(v for v in timing.values() if isinstance(v, (int, float)))), 2)
            if timing else "",
            "created": side.get("created", ""),
        })
    return rows


def _metrics_section(results: Path, computed: List[Dict[str, Any]], profile: str) -> str:
    evaluation_csv = results / EVALUATION_CSV
    if evaluation_csv.is_file():
        parts = [f"<p>From <code>{_esc(EVALUATION_CSV)}</code> (medgan evaluate).</p>",
                 _table(read_csv_rows(evaluation_csv))]
        summary_path = results / EVALUATION_SUMMARY
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            stats = [{"metric": k, **v} for k, v in (summary.get("metrics") or {}).items()]
            parts += [f"<p>Profile <b>{_esc(summary.get('profile'))}</b>: {_esc(summary.get('description'))}; "
                      f"{_esc(summary.get('n_cases'))} cases.</p>", _table(stats)]
        return "".join(parts)
    if not computed:
        return "<p>No reference volume on the output grid: no metric computed.</p>"
    from medgan.metrics import PROFILES

    return (f"<p>Computed for this report with profile <b>{_esc(profile)}</b> "
            f"({_esc(PROFILES[profile].description)}); the input row is the unprocessed baseline.</p>"
            + _table(computed))


def build_report(results_dir: PathLike, out_html: PathLike, task: Optional[str] = None,
                 profile: str = DEFAULT_PROFILE, window: Optional[str] = None, views: Sequence[str] = VIEWS,
                 centre: Union[str, Sequence[float]] = CENTRE_BODY, max_cases: Optional[int] = None,
                 title: Optional[str] = None) -> Path:
    """Write the HTML report of a results folder (layout: ``docs/results_layout.md``).

    Args:
        results_dir: the folder ``medgan run`` wrote.
        out_html: the report file (written atomically).
        task: a :class:`medgan.keys.Task` value choosing the CT window and ranges; default: the
            ``bundle.task`` of the first sidecar, else soft-tissue defaults.
        profile: metric profile when metrics are computed here (ignored when ``evaluation.csv`` exists).
        window: CT window override (``soft_tissue``, ``brain``, ``bone``, ``lung``, ``wide`` or ``W400/L40``).
        views: montage rows.
        centre: ``body`` (centre of the body in the reference or output), ``lesion`` (first lesion
            of the sidecar with ``centre_ras_mm``), or three RAS coordinates (mm).
        max_cases: montages for the first N cases only (tables list every case).
        title: page title.

    Returns:
        the written path.

    Raises:
        MedganError: no results folder or no case in it, an unknown task, window, profile or centre.
    """
    from medgan.metrics import PROFILES

    if profile not in PROFILES:
        raise MedganError(f"unknown metric profile {profile!r}", fix=f"choose one of {', '.join(PROFILES)}")
    results = Path(results_dir)
    cases = find_cases(results)
    if task is None:
        task = next((c.sidecar.get("bundle", {}).get("task") for c in cases if c.sidecar.get("bundle", {}).get("task")),
                    None)
    display = display_for_task(task, window)
    computed: List[Dict[str, Any]] = []
    figures: List[str] = []
    for index, case in enumerate(cases):
        if max_cases is not None and index >= max_cases:
            continue
        panels, volumes = case_panels(case, display)
        point = _centre(case, volumes, centre)
        png = render_case_montage(panels, point, views, title=f"case {case.case_id}")
        figures.append(f"<h3>{_esc(case.case_id)}</h3>{_png_tag(png, f'montage of case {case.case_id}')}")
        computed += _computed_metrics(case, volumes, profile)
        logger.info("report: case %s drawn (%d panels)", case.case_id, len(panels))
    notes = [f"{c.case_id}: {n}" for c in cases for n in (c.sidecar.get("notes") or [])]
    safety, lesions = _safety_rows(cases)
    heading = title or f"medgan report: {results.name}"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(heading)}</h1>",
        "<p class='banner'>SYNTHETIC IMAGES: every output shown here was generated by a model. "
        "Do not use for diagnosis without comparison to the acquired images.</p>",
        "".join(f"<p class='note'>{_esc(n)}</p>" for n in notes),
        f"<p>Results folder <code>{_esc(results.resolve())}</code>; {len(cases)} case(s); task "
        f"<b>{_esc(task or 'not given')}</b>; CT window {_esc(display.window.label())}; "
        f"generated {_esc(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))}.</p>",
    ]
    if (results / RUN_SUMMARY).is_file():
        parts += ["<h2>Run summary</h2>", _table(read_csv_rows(results / RUN_SUMMARY))]
    parts += ["<h2>Metrics</h2>", _metrics_section(results, computed, profile),
              "<h2>Safety</h2>", _table(safety),
              "<h3>Lesions</h3>", _table(lesions) if lesions else "<p>No lesion table in the sidecars.</p>",
              "<h2>Provenance</h2>", _table(_provenance_rows(cases)),
              "<h2>Pictures</h2>",
              f"<p>Rows: {', '.join(views)} through the centre given in each title; pixels keep their physical "
              "aspect ratio; the patient's right is on the left. Difference: red = output above the "
              "comparison, blue = below.</p>",
              "".join(figures), "</body></html>"]
    out = Path(out_html)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    logger.info("report written to %s", out)
    return out
