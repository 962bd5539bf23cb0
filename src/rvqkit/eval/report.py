"""The evaluation's report: the summary table, ``report.md``, ``report.json``, ``items.csv``, PNG plots of
each metric against bitrate, and ``index.html`` with the plots, the table and audio players (all local
files, no network)."""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..errors import RvqkitError
from ..inspector import json_ready
from .metrics import HIGHER_IS_BETTER, METRICS, UNITS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .run import EvalResult

REPORT_FORMAT = "rvqkit-eval"
REPORT_VERSION = 1
REPORT_FILES = ("report.md", "report.json", "items.csv", "index.html")
REPORT_FOLDERS = ("plots", "audio")
TITLES = {
    "si_sdr": "SI-SDR",
    "mel_distance": "mel distance",
    "stft_distance": "MR-STFT distance",
    "pesq": "PESQ (wb)",
    "stoi": "STOI",
    "visqol": "ViSQOL",
}
KEYS = ("codec", "setting", "label", "n_q", "kbps")
EXTRA_MEANS: tuple[str, ...] = ("real_kbps", "ecdc_kbps", "ecdc_lm_kbps", "delay_samples")
EXTRA_MEANS += ("steps_per_s_flatten", "steps_per_s_delay", "steps_per_s_parallel")
#: means kept only where a row has the column (Mimi, DAC and SNAC rows: codes per second of audio)
OPTIONAL_MEANS: tuple[str, ...] = ("tokens_per_s",)
BASELINE_CODECS = ("opus", "mp3")
DPI = 110


# -- the table ---------------------------------------------------------------------------------------------
def _values(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    v = np.array([r.get(key, math.nan) for r in rows], dtype=np.float64)
    return v[~np.isnan(v)]


def _order(s: dict[str, Any], models: dict[str, int] | None = None) -> tuple:
    """Each model's rows (in the order the models came; per bandwidth, then per k), then the baselines
    (in a comparison: grouped by the model whose rate they ran at)."""
    rank = {"bandwidth": 0, "k": 1, "baseline": 2}[s["setting"]]
    model = (models or {}).get(s.get("model", ""), 0)
    return (rank == 2, model, rank, s["codec"], s["kbps"], 0 if s["n_q"] is None else s["n_q"])


def summary_rows(rows: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:
    """Per codec, setting and bitrate (``KEYS``): ``items``; for each metric ``<m>_mean``, ``<m>_median``,
    ``<m>_p10`` (10th percentile) and ``<m>_n`` (items scored); ``<m>_aligned_mean``; and the means of
    the bitrates, delay and LM steps per second; ``model`` where the rows name their model (a
    comparison of models). Skipped (NaN) values are left out of each statistic."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    models: dict[str, int] = {}
    for r in rows:
        if "model" in r and r["codec"] not in BASELINE_CODECS:
            models.setdefault(r["model"], len(models))
    for r in rows:
        n_q = r.get("n_q")
        n_q = None if n_q is None or (isinstance(n_q, float) and math.isnan(n_q)) else int(n_q)
        groups.setdefault((r["codec"], r["setting"], r["label"], n_q, float(r["kbps"])), []).append(r)
    out = []
    for key, rs in groups.items():
        s: dict[str, Any] = dict(zip(KEYS, key, strict=True))
        if "model" in rs[0]:
            s["model"] = rs[0]["model"]
        s["items"] = len(rs)
        for m in metrics:
            v = _values(rs, m)
            s[f"{m}_n"] = int(len(v))
            with np.errstate(invalid="ignore"):  # inf - inf in the mean of identical items
                s[f"{m}_mean"] = float(v.mean()) if len(v) else math.nan
                s[f"{m}_median"] = float(np.median(v)) if len(v) else math.nan
                s[f"{m}_p10"] = float(np.percentile(v, 10)) if len(v) else math.nan
                a = _values(rs, f"{m}_aligned")
                s[f"{m}_aligned_mean"] = float(a.mean()) if len(a) else math.nan
        for k in (*EXTRA_MEANS, *(k for k in OPTIONAL_MEANS if any(k in r for r in rs))):
            v = _values(rs, k)
            s[k] = float(v.mean()) if len(v) else math.nan
        out.append(s)
    return sorted(out, key=lambda s: _order(s, models))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """The summary table of :func:`rvqkit.eval.evaluate`'s rows (see :func:`summary_rows`)."""
    import pandas as pd

    info = df.attrs.get("eval", {})
    metrics = tuple(info.get("metrics", dict.fromkeys(METRICS)))
    records = df.astype(object).where(df.notna(), math.nan).to_dict("records")
    return pd.DataFrame(summary_rows(records, metrics))


def _ran(info: dict[str, Any]) -> list[str]:
    return [m for m, status in info["metrics"].items() if status == "ok"]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:.0f}"
    return str(v)


def main_table(summary: list[dict[str, Any]], info: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the report's main table (means)."""
    ran = _ran(info)
    head = ["setting", "kbps", "real kbps", *(f"{TITLES[m]} {UNITS[m]}".strip() for m in ran), "items"]
    cells = [
        [
            s["label"],
            _fmt(s["kbps"]),
            _fmt(s["real_kbps"]),
            *(_fmt(s[f"{m}_mean"]) for m in ran),
            str(s["items"]),
        ]
        for s in summary
    ]
    return head, cells


def _md_table(head: list[str], cells: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(c) + " |" for c in cells),
    ]


def skip_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How often each skip reason occurs over the rows."""
    out: dict[str, int] = {}
    for r in rows:
        for reason in filter(None, (r.get("skipped") or "").split("; ")):
            out[reason] = out.get(reason, 0) + 1
    return out


FAMILY_NAMES = {"mimi": "Mimi", "dac": "DAC", "snac": "SNAC"}


def model_infos(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model's facts: ``info["models"]`` in a comparison, else ``[info]``."""
    return list(info.get("models", [info]))


def _settings_line(m: dict[str, Any]) -> str:
    """What was evaluated for one model: bandwidths and k (EnCodec) or codebook counts (the others)."""
    ks = ", ".join(map(str, m["n_q"]))
    if m.get("family") == "snac":
        return f"**n_q**: {ks} of {m['num_codebooks']} levels (first k levels, coarsest first)"
    if m.get("family"):
        return f"**n_q**: {ks} of {m['num_codebooks']} codebooks (first k codebooks)"
    return (
        f"**bandwidths**: {', '.join(f'{b:g}' for b in m['bandwidths'])} kbps; "
        f"**k**: {ks} of {m['top_n_q']} codebooks at the top bandwidth"
    )


def _model_fact(m: dict[str, Any]) -> str:
    kind = FAMILY_NAMES.get(m.get("family") or "", "EnCodec")
    return f"{m['model']} ({kind}, {m['sample_rate']} Hz, {m['channels']} ch, {m['frame_rate']:g} frames/s)"


def _header_lines(info: dict[str, Any]) -> list[str]:
    if "models" not in info:
        model = f"{info['model']} ({info['sample_rate']} Hz, {info['channels']} ch)"
        if info.get("family"):
            model = _model_fact(info)
        return [
            f"- **model**: {model}",
            f"- **items**: {info['items_scored']} scored of {info['items']} ({info['seconds']:.1f} s of audio)",
            f"- {_settings_line(info)}",
            f"- **real bitrate**: {info['entropy_coding']['note']}",
        ]
    out = [f"- **models compared**: {len(info['models'])}; each scored at its own sample rate"]
    out += [f"- **{m['name']}**: {_model_fact(m)}; {_settings_line(m)}" for m in info["models"]]
    out += [
        f"- **items**: {info['items_scored']} scored of {info['items']} ({info['seconds']:.1f} s of audio)",
        f"- **real bitrate**: {info['entropy_coding']['note']}",
    ]
    return out


def _tokens_per_s(s: dict[str, Any], info: dict[str, Any]) -> float:
    v = s.get("tokens_per_s", math.nan)
    if isinstance(v, float) and math.isfinite(v):
        return v
    by_name = {m.get("name"): m for m in model_infos(info)}
    frame_rate = by_name.get(s.get("model"), info).get("frame_rate", info.get("frame_rate", math.nan))
    return s["n_q"] * frame_rate * 1.0


def to_markdown(result: EvalResult, summary: list[dict[str, Any]], plots: list[str]) -> str:
    info = result.info
    ran = _ran(info)
    out = ["# rvqkit eval", ""]
    out += _header_lines(info)
    for m, status in info["metrics"].items():
        if status != "ok":
            out.append(f"- **{TITLES[m]} skipped**: {status}")
    used = ", ".join(f"{b['label']} ({b['engine']})" for b in info["baselines"]["used"]) or "none"
    out.append(f"- **baselines**: {used}")
    for codec, why in info["baselines"]["missing"].items():
        out.append(f"- **baseline {codec} missing**: {why}")
    t = info["timing"]
    out.append(
        f"- **time**: {t['total_s']:.1f} s in all, of which {t['model_s']:.1f} s encoding and decoding "
        f"({t['workers']} metric workers beside the model)"
    )
    out += ["", "## Means per setting", "", *_md_table(*main_table(summary, info))]
    for m in ran:
        better = "higher is better" if HIGHER_IS_BETTER[m] else "lower is better"
        head = ["setting", "mean", "median", "p10", "aligned mean", "n"]
        cells = [
            [
                s["label"],
                _fmt(s[f"{m}_mean"]),
                _fmt(s[f"{m}_median"]),
                _fmt(s[f"{m}_p10"]),
                "-" if m in ("pesq", "visqol") else _fmt(s[f"{m}_aligned_mean"]),
                str(s[f"{m}_n"]),
            ]
            for s in summary
        ]
        out += ["", f"## {TITLES[m]} {UNITS[m]} ({better})".replace("  ", " "), "", *_md_table(head, cells)]
    k_rows = [s for s in summary if s["setting"] == "k"]
    if k_rows:
        head = ["k", "kbps", "flatten steps/s", "delay steps/s", "parallel steps/s", "tokens/s"]
        multi = "models" in info
        cells = [
            [
                *([s["label"]] if multi else []),
                str(s["n_q"]),
                _fmt(s["kbps"]),
                _fmt(s["steps_per_s_flatten"], 4),
                _fmt(s["steps_per_s_delay"], 4),
                _fmt(s["steps_per_s_parallel"], 4),
                _fmt(_tokens_per_s(s, info), 4),
            ]
            for s in k_rows
        ]
        if multi:
            head = ["setting", *head]
        out += [
            "",
            "## What a language model pays",
            "",
            "Sequence positions per second of audio for each token layout (without begin/end tokens); "
            "`delay` and `parallel` predict k tokens per position"
            + (
                "; SNAC's levels run at different frame rates, so these layouts do not apply to it "
                "(tokens/s: its codes per second)."
                if any(m.get("family") == "snac" for m in model_infos(info))
                else "."
            ),
            "",
            *_md_table(head, cells),
        ]
    head = ["codebook", "distinct codes", "usage", "entropy bits"]
    for m in model_infos(info):
        cells = [
            [str(c["codebook"]), str(c["distinct_codes"]), _fmt(c["usage"]), _fmt(c["entropy_bits"])]
            for c in m["codebooks"]
        ]
        where = (
            "top bandwidth"
            if not m.get("family")
            else f"first {m['top_n_q']} " + ("levels" if m["family"] == "snac" else "codebooks")
        )
        title = f"Codebook usage (all items, {where})"
        if "name" in m:
            title = f"{m['name']}: {title[0].lower()}{title[1:]}"
        out += ["", f"## {title}", "", *_md_table(head, cells)]
    reasons = skip_counts(result.rows)
    if info["skipped_items"] or reasons:
        out += ["", "## Skipped", ""]
        out += [f"- item {s['item']}: {s['reason']}" for s in info["skipped_items"]]
        out += [f"- {r} ({n} rows)" for r, n in reasons.items()]
    if plots:
        out += ["", "## Plots", "", *(f"![{p}]({p})" for p in plots)]
    return "\n".join(out) + "\n"


# -- plots -------------------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _finite(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y) and x > 0]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def metric_plot(summary: list[dict[str, Any]], info: dict[str, Any], metric: str) -> Figure:
    """Mean ``metric`` against bitrate: each model per bandwidth (nominal and real), per k, and baselines."""
    fig = _figure(7, 4.2)
    ax = fig.subplots()
    y = f"{metric}_mean"
    models = list(dict.fromkeys(s.get("model") for s in summary if s["codec"] not in BASELINE_CODECS))
    palette = ["tab:blue", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    by_name = {m.get("name"): m for m in model_infos(info)}
    for i, model in enumerate(models):
        m = by_name.get(model, info)
        name = model or FAMILY_NAMES.get(m.get("family") or "", "rvqkit")
        color = palette[i % len(palette)]
        rows = [s for s in summary if s["codec"] not in BASELINE_CODECS and s.get("model") == model]
        bw = [s for s in rows if s["setting"] == "bandwidth"]
        ks = [s for s in rows if s["setting"] == "k"]
        first = "first k levels" if m.get("family") == "snac" else "first k codebooks"
        if ks:
            ax.plot(*_finite([s["kbps"] for s in ks], [s[y] for s in ks]), "-", color=color,
                    alpha=0.45 if bw else 1.0, marker=".", label=f"{name}, {first}")  # fmt: skip
        if bw:
            ax.plot(*_finite([s["kbps"] for s in bw], [s[y] for s in bw]), "-o", color=color,
                    label=f"{name} per bandwidth (nominal kbps)")  # fmt: skip
            lm = m["entropy_coding"]["items"] > 0
            ax.plot(*_finite([s["real_kbps"] for s in bw], [s[y] for s in bw]), ":o", color=color,
                    markerfacecolor="none", label=f"{name} at its real " + (".ecdc bitrate (LM entropy-coded)" if lm
                                                                           else ".ecdc bitrate (no entropy coding)"))  # fmt: skip
    colors = {"opus": "tab:orange", "mp3": "tab:green"}
    base = [s for s in summary if s["setting"] == "baseline"]
    drawn: dict[str, int] = {}
    for codec, model in sorted({(s["codec"], s.get("model") or "") for s in base}):
        rs = [s for s in base if s["codec"] == codec and (s.get("model") or "") == model]
        at = rs[0]["label"].partition(" @ ")[2]
        style = ("-s", "--^", ":v", "-.d")[drawn.get(codec, 0) % 4]  # baselines at each model's rate
        drawn[codec] = drawn.get(codec, 0) + 1
        ax.plot(*_finite([s["real_kbps"] for s in rs], [s[y] for s in rs]), style, color=colors.get(codec, "gray"),
                label=f"{codec} (real kbps)" + (f" @ {at}" if at else ""))  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bitrate (kbps)")
    ax.set_ylabel(f"{TITLES[metric]} {UNITS[metric]}".strip())
    better = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
    ax.set_title(f"{TITLES[metric]}: mean over items ({better})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def codebook_plot(info: dict[str, Any], title: str = "Codebook usage over all items") -> Figure:
    fig = _figure(7, 3.4)
    ax = fig.subplots()
    cb = info["codebooks"]
    x = [c["codebook"] for c in cb]
    ax.bar(x, [c["entropy_bits"] for c in cb], color="tab:purple", label="entropy (bits)")
    ax.set_xlabel("codebook")
    ax.set_ylabel("entropy (bits per code)")
    ax2 = ax.twinx()
    ax2.plot(x, [c["distinct_codes"] for c in cb], "o", color="tab:red", label="distinct codes")
    ax2.set_ylabel("distinct codes")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.legend(fontsize=7, loc="outside lower center", ncols=2)
    return fig


def save_plots(summary: list[dict[str, Any]], info: dict[str, Any], folder: Path) -> list[str]:
    """PNG per metric that ran, and the codebook usage; returns the paths relative to the report."""
    folder.mkdir(exist_ok=True)
    out = []
    for m in _ran(info):
        metric_plot(summary, info, m).savefig(folder / f"{m}.png", dpi=DPI, format="png")
        out.append(f"plots/{m}.png")
    if "models" not in info:
        codebook_plot(info).savefig(folder / "codebooks.png", dpi=DPI, format="png")
        return [*out, "plots/codebooks.png"]
    for m in info["models"]:
        name = f"codebooks_{_slug(m['name'])}.png"
        codebook_plot(m, f"{m['name']}: codebook usage over all items").savefig(
            folder / name, dpi=DPI, format="png"
        )
        out.append(f"plots/{name}")
    return out


def plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# -- HTML --------------------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1150px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.plots { display: grid; grid-template-columns: repeat(2, 1fr); gap: 1em; }
.plots img { width: 100%; border: 1px solid #ddd; }
.example { border: 1px solid #ddd; padding: 0.5em 1em; margin: 1em 0; }
.player { display: grid; grid-template-columns: 14em 20em 1fr; align-items: center; gap: 0.3em 1em; }
.player audio { width: 20em; height: 2em; } .note { color: #666; font-size: 0.85em; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


def _label_order(pair: tuple[str, Any]) -> tuple:
    """The models first, then each baseline codec; by bitrate ("<codec> <kbps> kbps ...")."""
    codec, kbps = (pair[0].split() + ["", ""])[:2]
    try:
        rate = float(kbps[2:]) if kbps.startswith("k=") else float(kbps)
    except ValueError:
        rate = math.inf
    return (codec in BASELINE_CODECS, codec, rate)


def write_examples(result: EvalResult, folder: Path) -> list[dict[str, Any]]:
    """WAV files of the kept examples under ``folder``; returns (item, [(label, file)]) for the page."""
    from ..audio import write_audio

    folder.mkdir(exist_ok=True)
    sr = result.info["sample_rate"]
    out = []
    for n, ex in enumerate(result.examples):
        players = []
        for label, audio in [
            ("original", ex.original),
            *sorted(ex.reconstructions.items(), key=_label_order),
        ]:
            name = f"{n:02d}_{_slug(label)}.wav"
            write_audio(folder / name, np.asarray(audio), ex.rates.get(label, sr), overwrite=True)
            players.append((label, f"audio/{name}"))
        out.append({"item": ex.item, "players": players})
    return out


def to_html(result: EvalResult, summary: list[dict[str, Any]], plots: list[str], examples: list[dict]) -> str:
    info = result.info
    e = html.escape
    head, cells = main_table(summary, info)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rvqkit eval</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>rvqkit eval: {e(info['model'])}</h1>",
        "<ul>",
        f"<li>{info['items_scored']} of {info['items']} items scored, {info['seconds']:.1f} s of audio, "
        f"{info['sample_rate']} Hz, {info['channels']} channel(s)</li>",
        f"<li>real bitrate: {e(info['entropy_coding']['note'])}</li>",
    ]
    if "models" in info:
        parts += [f"<li>{e(m['name'])}: {e(_model_fact(m))}</li>" for m in info["models"]]
    elif info.get("family"):
        parts.append(f"<li>{e(_model_fact(info))}</li>")
    for m, status in info["metrics"].items():
        if status != "ok":
            parts.append(f"<li>{e(TITLES[m])} skipped: {e(status)}</li>")
    for codec, why in info["baselines"]["missing"].items():
        parts.append(f"<li>baseline {e(codec)} missing: {e(why)}</li>")
    parts.append("</ul><h2>Means per setting</h2><table><tr>")
    parts += [f"<th>{e(h)}</th>" for h in head]
    parts.append("</tr>")
    for row in cells:
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2><div class='plots'>")
        parts += [f"<img src='{e(p)}' alt='{e(p)}'>" for p in plots]
        parts.append("</div>")
    if examples:
        by_item: dict[tuple[str, str], dict[str, Any]] = {(r["item"], r["label"]): r for r in result.rows}
        ran = [m for m in _ran(info) if m in ("si_sdr", "mel_distance", "pesq", "stoi")]
        parts.append("<h2>Listen</h2>")
        for ex in examples:
            parts.append(f"<div class='example'><h3>{e(ex['item'])}</h3><div class='player'>")
            for label, src in ex["players"]:
                r = by_item.get((ex["item"], label), {})
                scores = ", ".join(f"{TITLES[m]} {_fmt(r.get(m))}" for m in ran) if r else ""
                parts.append(
                    f"<span>{e(label)}</span><audio controls preload='none' src='{e(src)}'></audio>"
                    f"<span class='note'>{e(scores)}</span>"
                )
            parts.append("</div></div>")
    parts.append(
        f"<p class='note'>rvqkit {e(__version__)}; details in report.md, report.json, items.csv.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- files -------------------------------------------------------------------------------------------------
def check_report_folder(folder: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Raise :class:`RvqkitError` if ``folder`` is a file or already holds a report (unless ``overwrite``)."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise RvqkitError(f"{out} is a file, not a folder")
    existing = [n for n in (*REPORT_FILES, *REPORT_FOLDERS) if (out / n).exists()]
    if existing and not overwrite:
        raise RvqkitError(f"{out} already holds {', '.join(existing)}; pass overwrite=True to replace them")


def _csv_columns(rows: list[dict[str, Any]]) -> list[str]:
    first = [
        "item",
        "seconds",
        "codec",
        "setting",
        "label",
        "n_q",
        "kbps",
        "real_kbps",
        "ecdc_kbps",
        "ecdc_lm_kbps",
    ]
    first += [m for m in METRICS if any(m in r for r in rows)]
    rest = sorted({k for r in rows for k in r} - set(first) - {"skipped"})
    return [*first, *rest, "skipped"]


def write_report(
    result: EvalResult, folder: str | os.PathLike[str], overwrite: bool = False, plots: bool = True
) -> list[str]:
    """Write ``report.md``, ``report.json``, ``items.csv``, ``index.html``, ``plots/*.png`` (with
    matplotlib and ``plots``) and ``audio/*.wav`` (the examples) into ``folder`` (created if missing).
    Refuses before writing anything if they exist and ``overwrite`` is False. Returns the files written."""
    check_report_folder(folder, overwrite)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    info = result.info
    summary = summary_rows(result.rows, tuple(info["metrics"]))
    if plots and not plots_available():
        info["plots"] = "skipped: plots need matplotlib (pip install 'rvqkit[plot]')"
        plots = False
    pngs = save_plots(summary, info, out / "plots") if plots else []
    examples = write_examples(result, out / "audio") if result.examples else []
    report = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "rvqkit_version": __version__,
        "info": info,
        "summary": summary,
        "skipped_reasons": skip_counts(result.rows),
        "plots": pngs,
    }
    (out / "report.json").write_text(json.dumps(json_ready(report), indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(result, summary, pngs))
    columns = _csv_columns(result.rows)
    with open(out / "items.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        w.writeheader()
        for r in result.rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    (out / "index.html").write_text(to_html(result, summary, pngs, examples))
    return [*REPORT_FILES, *pngs, *(p for ex in examples for _, p in ex["players"])]
