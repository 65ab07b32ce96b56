"""Pictures of a model and of a run, written as PNG files: attention heatmaps, the positional encoding, the
learning-rate schedule, training curves, a confusion matrix.

  python -m jax_transformer.viz attention runs/multi30k_en_de --src "A dog runs on the beach." --out viz/
  python -m jax_transformer.viz positions --d-model 128 --length 100 --out viz/positions.png
  python -m jax_transformer.viz schedule --config configs/multi30k_en_de.py --out viz/schedule.png
  python -m jax_transformer.viz curves runs/multi30k_en_de --out viz/curves.png

`attention` writes three files into --out: encoder_self.png (source x source), decoder_self.png (target x target,
future positions blank) and cross.png (target x source); with --layer L they are encoder_self_layerL.png etc. Each
is a grid of heatmaps, one row per layer and one column per head (both counted from 0); a heatmap row is one query
token, its columns the keys it attends to. The source axis is the sentencepiece pieces of --src plus </s>; the target
axis is the decoder input: <s> and the pieces of the target (--tgt, else the model's own greedy translation), so the
row of each token is the query that predicts the token after it. The weights are the ones the model's attention
modules sow (`nnx.Intermediate`) during its own forward pass in eval mode (`attention_maps`).

Library functions return the arrays they plot (for tests and notebooks). Figures are drawn on matplotlib's Agg canvas
without pyplot: nothing opens a window or changes the global backend.
"""

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np

from jax_transformer.cli import run_cli

ATTENTION_KINDS = ("encoder_self", "decoder_self", "cross")
_ATTENTION_TITLES = {
    "encoder_self": "encoder self-attention (query: source token, key: source token)",
    "decoder_self": "decoder self-attention (query: target token, key: earlier target token; future masked)",
    "cross": "cross-attention (query: target token, key: source token)",
}
DPI = 110

# ---------------------------------------------------------------------------------------------------------------------
# Attention weights sown by the model's own forward pass
# ---------------------------------------------------------------------------------------------------------------------


def _one_row(ids, name: str):
    import jax.numpy as jnp

    ids = jnp.asarray(ids, jnp.int32)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise ValueError(f"{name} must be one non-empty sentence of ids, (len,) or (1, len); got shape {ids.shape}")
    return ids


def run_with_attention(model, src_ids, tgt_ids) -> tuple[dict, np.ndarray]:
    """The teacher-forced forward pass `model(src, tgt)` of `model` (a Transformer) in eval mode on one sentence pair,
    with every attention module's weights captured as the `nnx.Intermediate` it sows.

    src_ids: (src_len,) or (1, src_len) source ids (EOS included, as the model was trained); tgt_ids: (tgt_len,) or
    (1, tgt_len) decoder input ids (BOS first). Returns ({'encoder_self': (layers, heads, S, S), 'decoder_self':
    (layers, heads, T, T), 'cross': (layers, heads, T, S)} as fp32 numpy, logits (T, tgt_vocab)).

    It runs an eval-mode copy with `MultiHeadAttention.sow_weights` set (the caller's model keeps its mode and sows
    nothing) under `nnx.capture`, so the weights are those of the model's own forward pass.
    """
    from flax import nnx

    from jax_transformer.model.transformer import MultiHeadAttention

    src, tgt = _one_row(src_ids, "src_ids"), _one_row(tgt_ids, "tgt_ids")
    model = nnx.clone(model)
    model.eval()
    for _, module in nnx.iter_graph(model):
        if isinstance(module, MultiHeadAttention):
            module.sow_weights = True
    logits, sown = nnx.capture(model, nnx.Intermediate)(src, tgt)

    def weights(attention_state):  # the one call's weights (1, heads, q, k) -> (heads, q, k) fp32
        (value,) = attention_state["attention_weights"].get_value()
        return np.asarray(value[0], np.float32)

    encoder, decoder = sown["encoder"]["layers"], sown["decoder"]["layers"]
    maps = {
        "encoder_self": np.stack([weights(encoder[i]["self_attn"]) for i in range(len(model.encoder.layers))]),
        "decoder_self": np.stack([weights(decoder[i]["self_attn"]) for i in range(len(model.decoder.layers))]),
        "cross": np.stack([weights(decoder[i]["cross_attn"]) for i in range(len(model.decoder.layers))]),
    }
    return maps, np.asarray(logits[0], np.float32)


def attention_maps(model, src_ids, tgt_ids) -> dict[str, np.ndarray]:
    """Attention weights of one sentence pair: {'encoder_self': (layers, heads, S, S), 'decoder_self':
    (layers, heads, T, T), 'cross': (layers, heads, T, S)}; see `run_with_attention`."""
    return run_with_attention(model, src_ids, tgt_ids)[0]


# ---------------------------------------------------------------------------------------------------------------------
# Drawing helpers
# ---------------------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    """A Figure on an Agg canvas (no pyplot, no display, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _label(token: str) -> str:
    """A token as a tick label: '$' would start matplotlib mathtext."""
    return str(token).replace("$", r"\$")


# ---------------------------------------------------------------------------------------------------------------------
# Attention heatmaps
# ---------------------------------------------------------------------------------------------------------------------


def plot_attention(
    maps: dict, src_tokens: Sequence[str], tgt_tokens: Sequence[str], path: str, layer: int | None = None
) -> dict[str, str]:
    """Write one PNG per attention kind in `maps` (from `attention_maps`) into the directory `path`:
    {kind}.png with all layers, or {kind}_layer{layer}.png with one layer (0-based; negative counts from the end).

    Each file is a grid: a row per layer, a column per head; within a heatmap, rows are queries and columns keys,
    labelled with `src_tokens` (length S) / `tgt_tokens` (length T). Colours span 0..1 (one colour bar); positions
    a causal mask hides (decoder self-attention, key after query) are blank. Returns {kind: file path}.
    """
    from matplotlib import colormaps

    axes_tokens = {  # (query tokens, key tokens)
        "encoder_self": (src_tokens, src_tokens), "decoder_self": (tgt_tokens, tgt_tokens),
        "cross": (tgt_tokens, src_tokens),
    }  # fmt: skip
    cmap = colormaps["viridis"].with_extremes(bad="white")
    written = {}
    for kind in ATTENTION_KINDS:
        if kind not in maps:
            continue
        weights = np.asarray(maps[kind], np.float32)
        rows, cols = axes_tokens[kind]
        if weights.ndim != 4 or weights.shape[2:] != (len(rows), len(cols)):
            raise ValueError(
                f"{kind} weights of shape {weights.shape} do not fit {len(rows)} query x {len(cols)} key tokens"
            )
        layers = list(range(weights.shape[0]))
        if layer is not None:
            if not -len(layers) <= layer < len(layers):
                raise ValueError(f"layer {layer} is out of range: the model has {len(layers)} layers in {kind}")
            layers = [layers[layer]]
        heads = weights.shape[1]
        q_len, k_len = weights.shape[2:]

        # Sizes in inches: a cell per token, room for the labels of the left column and the bottom row.
        longest = max(len(str(t)) for t in [*rows, *cols])
        label_room = 0.3 + 0.075 * min(longest, 24)
        panel_w, panel_h = max(1.2, 0.17 * k_len + 0.15), max(1.0, 0.17 * q_len + 0.35)
        width, height = heads * panel_w + label_room + 1.4, len(layers) * panel_h + label_room + 0.8
        scale = min(1.0, 60.0 / width, 60.0 / height)  # keep huge grids (long sentences, many layers) printable
        fontsize = max(3.5, 7.0 * scale)
        fig = _figure(width * scale, height * scale)
        axes = fig.subplots(len(layers), heads, sharex=True, sharey=True, squeeze=False)
        image = None
        for r, lyr in enumerate(layers):
            for h in range(heads):
                ax = axes[r, h]
                data = weights[lyr, h]
                if kind == "decoder_self":  # blank where the causal mask forbids attention
                    data = np.ma.masked_where(np.triu(np.ones_like(data, dtype=bool), k=1), data)
                image = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
                ax.set_xticks(range(k_len))
                ax.set_yticks(range(q_len))
                ax.tick_params(length=1.5, pad=1, labelsize=fontsize)
                if r == 0:
                    ax.set_title(f"head {h}", fontsize=fontsize + 2)
                if h == 0:
                    ax.set_yticklabels([_label(t) for t in rows])
                    ax.set_ylabel(f"layer {lyr}", fontsize=fontsize + 2)
                if r == len(layers) - 1:
                    ax.set_xticklabels([_label(t) for t in cols], rotation=90)
        shrink = min(0.9, max(0.25, 6.0 / (height * scale)))  # a colour bar of about 6 inches or a quarter
        fig.colorbar(image, ax=axes, shrink=shrink, pad=0.01, aspect=30)
        fig.suptitle(_ATTENTION_TITLES[kind], fontsize=fontsize + 4)
        name = f"{kind}.png" if layer is None else f"{kind}_layer{layers[0]}.png"
        written[kind] = _save(fig, os.path.join(path, name))
    return written


# ---------------------------------------------------------------------------------------------------------------------
# Positional encoding, learning-rate schedule
# ---------------------------------------------------------------------------------------------------------------------


def plot_positional_encoding(length: int, d_model: int, layout: str = "interleaved", path: str = "") -> np.ndarray:
    """§3.5: the sinusoidal encoding matrix (length, d_model) as a heatmap (position x feature), beside a few of its
    features as curves over the positions. Returns the plotted matrix (= model.sinusoidal_positions)."""
    from jax_transformer.model.transformer import sinusoidal_positions

    if length <= 0 or d_model <= 0:
        raise ValueError(f"length and d_model must be positive, got {length} and {d_model}")
    if layout not in ("interleaved", "concatenated"):
        raise ValueError(f"layout must be 'interleaved' or 'concatenated', got {layout!r}")
    table = np.array(sinusoidal_positions(length, d_model, layout))
    fig = _figure(13, 4.8)
    heat, curves = fig.subplots(1, 2, width_ratios=[1.3, 1])
    image = heat.imshow(table, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    heat.set_xlabel("feature")
    heat.set_ylabel("position")
    heat.set_title(f"sinusoidal positional encoding ({layout}), {length} x {d_model}")
    fig.colorbar(image, ax=heat, pad=0.01)
    # Sines of a few frequencies, fast to slow: frequency k sits at feature 2k (interleaved) or k (concatenated).
    half = (d_model + 1) // 2
    for k in sorted({0, half // 8, half // 4, half // 2}):
        feature = 2 * k if layout == "interleaved" else k
        wavelength = 2 * np.pi * 10000.0 ** (2 * k / d_model)
        curves.plot(np.arange(length), table[:, feature], linewidth=1.2,
                    label=f"feature {feature}: sin, wavelength {wavelength:.3g}")  # fmt: skip
    curves.set_xlabel("position")
    curves.set_ylabel("value")
    curves.set_title("a few of its features over the positions")
    curves.legend(fontsize=8, loc="lower left", framealpha=0.9)
    curves.grid(alpha=0.3)
    _save(fig, path)
    return table


def plot_lr_schedule(config, path: str, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The learning rate of `config` (a Config) over its train.steps updates, from `learning_rate_schedule`.

    Returns (update numbers 1..train.steps, as plotted; learning rates): update n uses schedule(n - 1), which is also
    what the trainer logs as `lr` at step n. At most `points` updates are evaluated, always including the last one
    and those around the end of the warmup (where the rate peaks)."""
    import jax.numpy as jnp

    from jax_transformer.train.optimizer import learning_rate_schedule

    train = config.train
    schedule = learning_rate_schedule(train, config.model.d_model)
    steps = np.unique(np.linspace(1, train.steps, min(points, train.steps)).round().astype(np.int64))
    warmup = [s for s in (train.warmup_steps - 1, train.warmup_steps, train.warmup_steps + 1) if 1 <= s <= train.steps]
    steps = np.unique(np.concatenate([steps, np.array(warmup, np.int64)]))
    lrs = np.asarray(schedule(jnp.asarray(steps - 1)), np.float64)

    fig = _figure(8, 4.5)
    ax = fig.subplots()
    ax.plot(steps, lrs, linewidth=1.5)
    peak = int(np.argmax(lrs))
    ax.plot(steps[peak], lrs[peak], "o", color="tab:red")
    ax.annotate(f"peak {lrs[peak]:.3g} at update {steps[peak]}", (steps[peak], lrs[peak]), textcoords="offset points",
                xytext=(8, -4), fontsize=9, va="top")  # fmt: skip
    if 0 < train.warmup_steps < train.steps:
        label = f"end of warmup ({train.warmup_steps})"
        ax.axvline(train.warmup_steps, color="gray", linestyle="--", linewidth=0.8, label=label)
        ax.legend(loc="upper right", fontsize=9)
    ax.set_xlabel("update")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{config.name}: {train.schedule} schedule (d_model {config.model.d_model}, {train.steps} updates)")
    ax.grid(alpha=0.3)
    ax.set_xlim(0, train.steps)
    ax.set_ylim(bottom=0)
    _save(fig, path)
    return steps, lrs


# ---------------------------------------------------------------------------------------------------------------------
# Training curves, confusion matrix
# ---------------------------------------------------------------------------------------------------------------------


def training_series(records: list[dict]) -> dict[str, np.ndarray]:
    """The series of a run's metrics.jsonl records (`run_log.read_metrics`), sorted by step.

    A resumed run appends to the same file with its clock restarted at 0, and may repeat steps after the checkpoint
    it resumed from: the wall time is made cumulative over restarts (`run_log.timed_records`) and a repeated (kind,
    step) keeps its latest record. Keys: {train,valid}_{step,minutes,loss}, train_lr, valid_bleu (NaN where a
    validation had no BLEU)."""
    from jax_transformer.train.run_log import timed_records

    latest = {}
    for record, offset in timed_records(records):  # the clock made cumulative over restarts
        if record.get("kind") in ("train", "valid") and "step" in record:
            minutes = (offset + float(record["time"])) / 60.0
            latest[(record["kind"], int(record["step"]))] = {**record, "minutes": minutes}
    series = {}
    for kind, keys in (("train", ("loss", "lr")), ("valid", ("loss", "bleu"))):
        rows = [latest[k] for k in sorted(k for k in latest if k[0] == kind)]
        series[f"{kind}_step"] = np.array([r["step"] for r in rows], np.int64)
        series[f"{kind}_minutes"] = np.array([r["minutes"] for r in rows], np.float64)
        for key in keys:
            series[f"{kind}_{key}"] = np.array([r.get(key, np.nan) for r in rows], np.float64)
    return series


def plot_training_curves(run_dir: str, path: str) -> dict[str, np.ndarray]:
    """Loss (train and validation) and validation BLEU against the step and against wall-clock minutes, and the
    learning rate against the step, from `run_dir`/metrics.jsonl. Returns the plotted series (`training_series`)."""
    from jax_transformer.config import UserError
    from jax_transformer.train.run_log import read_metrics

    series = training_series(read_metrics(run_dir))
    if not len(series["train_step"]) and not len(series["valid_step"]):
        raise UserError(f"{run_dir} has no training metrics (metrics.jsonl); fix: pass a run directory, e.g. runs/NAME")
    fig = _figure(15, 8)
    axes = fig.subplots(2, 3)
    has_bleu = bool(np.isfinite(series["valid_bleu"]).any())
    for row, (axis, unit) in enumerate((("step", "step"), ("minutes", "wall-clock minutes"))):
        loss, bleu_ax = axes[row, 0], axes[row, 1]
        loss.plot(series[f"train_{axis}"], series["train_loss"], label="train (label-smoothed)", linewidth=1.2)
        loss.plot(series[f"valid_{axis}"], series["valid_loss"], "o-", label="validation", linewidth=1.2, markersize=3)
        loss.set_ylabel("loss")
        loss.legend(fontsize=9)
        loss.set_title(f"loss vs {unit}")
        if has_bleu:
            keep = np.isfinite(series["valid_bleu"])
            bleu_ax.plot(series[f"valid_{axis}"][keep], series["valid_bleu"][keep], "o-", color="tab:green",
                         linewidth=1.2, markersize=3)  # fmt: skip
        else:
            bleu_ax.text(0.5, 0.5, "no validation BLEU logged", ha="center", va="center", transform=bleu_ax.transAxes)
        bleu_ax.set_ylabel("validation BLEU")
        bleu_ax.set_title(f"validation BLEU vs {unit}")
        for ax in (loss, bleu_ax):
            ax.set_xlabel(unit)
            ax.grid(alpha=0.3)
    lr = axes[0, 2]
    lr.plot(series["train_step"], series["train_lr"], color="tab:purple", linewidth=1.2)
    lr.set_xlabel("step")
    lr.set_ylabel("learning rate")
    lr.set_title("learning rate vs step")
    lr.grid(alpha=0.3)
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes[1, 2].axis("off")
    last = [f"{series['train_step'][-1] if len(series['train_step']) else 0} steps"]
    if len(series["train_minutes"]):
        last.append(f"{series['train_minutes'][-1]:.1f} min")
    if has_bleu:
        last.append(f"best validation BLEU {np.nanmax(series['valid_bleu']):.2f}")
    fig.suptitle(f"{os.path.basename(os.path.normpath(run_dir))}: " + ", ".join(last))
    _save(fig, path)
    return series


def plot_confusion_matrix(matrix, labels: Sequence[str], path: str, title: str = "confusion matrix") -> np.ndarray:
    """A confusion matrix (rows: true class, columns: predicted class) with each cell's count written in it; colours
    are the row-normalised fractions (recall per class on the diagonal). Returns the matrix as plotted."""
    matrix = np.asarray(matrix)
    n = len(labels)
    if matrix.shape != (n, n):
        raise ValueError(f"a confusion matrix for {n} labels must be {n} x {n}, got shape {matrix.shape}")
    fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(40.0, max(4.5, 0.5 * n + 2.5))
    fig = _figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fontsize = max(4.0, min(10.0, 120.0 / max(n, 1)))
    for i in range(n):
        for j in range(n):
            value = matrix[i, j]
            text = f"{value:g}" if np.issubdtype(matrix.dtype, np.floating) else str(value)
            color = "white" if fractions[i, j] > 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
    ticks = [_label(t) for t in labels]
    ax.set_xticks(range(n), ticks, rotation=45 if max(map(len, ticks), default=0) > 3 else 0, ha="right")
    ax.set_yticks(range(n), ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = matrix.sum()
    accuracy = np.trace(matrix) / total if total else float("nan")
    ax.set_title(f"{title} (accuracy {accuracy:.1%}, {total:g} examples)")
    fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    _save(fig, path)
    return matrix


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def _attention_command(args) -> None:
    from flax import nnx

    from jax_transformer.config import UserError
    from jax_transformer.decode.translator import load_translator
    from jax_transformer.interop.ct2 import is_ct2_dir

    if not args.src.strip():
        raise UserError("--src is empty; fix: pass a sentence, e.g. --src 'A dog runs.'")
    if is_ct2_dir(args.model):  # its weights are CTranslate2's, not a JAX model's whose attention we can read
        raise UserError(f"{args.model} is a CTranslate2 model; fix: draw the run or model it was exported from")
    translator = load_translator(args.model, args.step)
    tokenizer, max_len = translator.tokenizer, translator.config.model.max_len
    src = tokenizer.encode([args.src])[0] + [tokenizer.eos_id]
    if len(src) > max_len:
        raise UserError(f"--src has {len(src)} tokens with </s>, more than the model's max_len {max_len}")
    if args.tgt is None:  # the model's own greedy translation, as token ids (no detokenize/re-encode round trip)
        out = [int(i) for i in translator.search(np.array([src], np.int32), beam_size=1, alpha=0.0)[0]]
        tgt = out[: out.index(tokenizer.eos_id)] if tokenizer.eos_id in out else out
        tgt = [i for i in tgt if i != tokenizer.pad_id]
    else:
        tgt = tokenizer.encode([args.tgt])[0]
    tgt_in = [tokenizer.bos_id] + tgt
    if len(tgt_in) > max_len:
        raise UserError(f"the target has {len(tgt_in)} tokens with <s>, more than the model's max_len {max_len}")
    model = nnx.merge(translator.graphdef, translator.params, translator.rest)
    maps = attention_maps(model, src, tgt_in)
    layers = min(len(weights) for weights in maps.values())  # encoder and decoder depths may differ
    if args.layer is not None and not -layers <= args.layer < layers:
        raise UserError(f"--layer {args.layer} is out of range: use 0..{layers - 1} (or -1 for the last)")
    src_tokens = [tokenizer.id_to_piece(i) for i in src]
    tgt_tokens = [tokenizer.id_to_piece(i) for i in tgt_in]
    print(f"source: {args.src}")
    print(f"target{'' if args.tgt is not None else ' (greedy translation)'}: {tokenizer.decode([tgt])[0]}")
    for path in plot_attention(maps, src_tokens, tgt_tokens, args.out, args.layer).values():
        print(f"wrote {path}")


def _positions_command(args) -> None:
    from jax_transformer.config import UserError

    if args.d_model <= 0 or args.length <= 0:
        raise UserError(f"--d-model and --length must be positive, got {args.d_model} and {args.length}")
    plot_positional_encoding(args.length, args.d_model, args.layout, args.out)
    print(f"wrote {args.out}")


def _schedule_command(args) -> None:
    from jax_transformer.config import load_config_file

    config = load_config_file(args.config, args.overrides)
    steps, lrs = plot_lr_schedule(config, args.out)
    peak = int(np.argmax(lrs))
    print(f"wrote {args.out} (peak learning rate {lrs[peak]:.4g} at update {steps[peak]})")


def _curves_command(args) -> None:
    from jax_transformer.config import UserError

    if not os.path.isdir(args.run_dir):
        raise UserError(f"{args.run_dir} is not a directory; fix: pass a run directory, e.g. runs/NAME")
    plot_training_curves(args.run_dir, args.out)
    print(f"wrote {args.out}")


def main(argv=None) -> int:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m jax_transformer.viz", description=doc[0].replace("\n", " "), epilog="\n\n".join(doc[1:3]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    attention = commands.add_parser(
        "attention", help="attention heatmaps of a sentence pair (encoder self, decoder self, cross)",
        description="Attention heatmaps of one sentence pair: writes encoder_self.png, decoder_self.png and cross.png "
        "into --out (with --layer L: encoder_self_layerL.png, ...), a grid of layers (rows) x heads (columns) each.",
    )  # fmt: skip
    attention.add_argument("model", help="run directory, averaged or exported model directory")
    attention.add_argument("--src", required=True, help="the source sentence")
    attention.add_argument("--tgt", default=None, help="the target sentence (default: the model's greedy translation)")
    attention.add_argument("--out", required=True, help="directory for the PNG files")
    attention.add_argument("--step", default="latest", help="checkpoint of a run: latest (default), best, or a step")
    attention.add_argument("--layer", type=int, default=None, help="only this layer (0-based; default: all)")

    positions = commands.add_parser("positions", help="the sinusoidal positional encoding matrix (§3.5)",
                                    description="Plot the sinusoidal positional encoding matrix (§3.5).")  # fmt: skip
    positions.add_argument("--d-model", type=int, default=128, help="feature dimension (default 128)")
    positions.add_argument("--length", type=int, default=100, help="number of positions (default 100)")
    positions.add_argument("--layout", choices=("interleaved", "concatenated"), default="interleaved",
                           help="sin/cos layout: the paper's interleaved (default) or Marian's")  # fmt: skip
    positions.add_argument("--out", required=True, help="the PNG file to write")

    schedule = commands.add_parser(
        "schedule", help="the learning-rate schedule of a config",
        description="Plot the learning rate over train.steps updates of a config (KEY=VALUE overrides like train.py: "
        "--config.train.warmup_steps=8000).",
    )  # fmt: skip
    schedule.add_argument("--config", required=True, help="a recipe file configs/NAME.py, or a run's config.json")
    schedule.add_argument("--out", required=True, help="the PNG file to write")

    curves = commands.add_parser("curves", help="training curves of a run: loss, validation BLEU, learning rate",
                                 description="Plot loss and validation BLEU vs step and vs minutes, and the learning "
                                 "rate, from RUN_DIR/metrics.jsonl.")  # fmt: skip
    curves.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds metrics.jsonl)")
    curves.add_argument("--out", required=True, help="the PNG file to write")

    args, rest = parser.parse_known_args(argv)
    args.overrides = []
    for item in rest:
        if args.command != "schedule" or not item.startswith("--config."):
            parser.error(f"unrecognized argument {item!r}")
        args.overrides.append(item[len("--config.") :])
    command = {"attention": _attention_command, "positions": _positions_command, "schedule": _schedule_command,
               "curves": _curves_command}[args.command]  # fmt: skip
    return run_cli(lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
