"""Export a trained model for PyTorch (torch_ref), Hugging Face transformers (Marian / Pegasus) or CTranslate2.

  python -m jax_transformer.export runs/multi30k_en_de --to torch --out exports/en_de_torch
  python -m jax_transformer.export runs/multi30k_en_de --step best --to hf --out exports/en_de_marian
  python -m jax_transformer.export runs/multi30k_en_de --to ct2 --quantization int8 --out exports/en_de_ct2

MODEL is a run directory (its latest checkpoint, or --step best|N), an averaged model directory or an exported one.
--to torch writes config.json, model.safetensors (torch_ref names) and spm.model:
    from torch_ref import load_pretrained, translate; model, sp = load_pretrained(DIR)
--to hf writes a transformers directory (config.json, generation_config.json, model.safetensors) plus a
MarianTokenizer (source.spm, target.spm, vocab.json, tokenizer_config.json): a MarianMTModel for post-norm models, a
PegasusForConditionalGeneration (Marian with pre-norm layers and final LayerNorms) for pre-norm ones:
    AutoModelForSeq2SeqLM.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR)
Neither can express learned positions or a LayerNorm epsilon other than 1e-5, and Pegasus has one vocabulary: such
models are refused for --to hf (use --to torch). Paper-style interleaved sinusoids are exported exactly (features
permuted).
--to ct2 writes a CTranslate2 model (model.bin, its config.json and vocabulary) with our spm.model and config: every
model option is expressible. `translate` and `evaluate` accept the directory and decode with CTranslate2
(pip install -e '.[ct2]'); --quantization (default float32) is the weight type CTranslate2 stores and computes in.
Offline, no pickles: safetensors, JSON, sentencepiece protobuf, CTranslate2's binary format.
"""

import argparse
import os
import sys

from jax_transformer.cli import require_new_output_dir, run_cli

TARGETS = ("torch", "hf", "ct2")


def export(model_path: str, to: str, out_dir: str, step: str = "latest", quantization: str = "float32") -> None:
    """Export the model at `model_path` (run, averaged or exported directory) to `out_dir` in format `to`."""
    from jax_transformer.config import UserError

    if to not in TARGETS:
        raise UserError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    require_new_output_dir(out_dir, model_path)

    from jax_transformer.decode.translator import load_translator
    from jax_transformer.interop.ct2 import check_quantization, is_ct2_dir

    if is_ct2_dir(model_path):
        raise UserError(f"{model_path} is a CTranslate2 model; fix: export from the run or model it was made from")
    if to == "ct2":
        check_quantization(quantization)  # before loading any weights

    if to == "hf":  # refuse before loading weights
        from jax_transformer.config import Config
        from jax_transformer.interop.hf_export import check_exportable, require_transformers

        require_transformers()
        if os.path.isfile(os.path.join(model_path, "config.json")):
            check_exportable(Config.load(os.path.join(model_path, "config.json")).model)
    translator = load_translator(model_path, step)
    if to == "ct2":
        from flax import nnx

        from jax_transformer.interop.ct2 import save_ct2

        model = nnx.merge(translator.graphdef, translator.params, translator.rest)
        save_ct2(model, translator.config, translator.tokenizer, out_dir, quantization)
    elif to == "hf":
        from flax import nnx

        from jax_transformer.interop.hf_export import save_hf

        model = nnx.merge(translator.graphdef, translator.params, translator.rest)
        model.eval()
        save_hf(model, translator.config, translator.tokenizer, out_dir)
    else:
        from jax_transformer.decode.translator import save_model_dir

        save_model_dir(translator, out_dir, metadata={"source": model_path, "step": step})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("model", help="run directory, averaged or exported model directory")
    parser.add_argument("--to", required=True, choices=TARGETS,
                        help="torch: torch_ref directory; hf: Marian/Pegasus; ct2: CTranslate2")  # fmt: skip
    parser.add_argument("--quantization", default="float32",
                        help="--to ct2: weight type: float32 (default), int8, int16 (where the CPU has it), ...")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--step", default="latest", help="checkpoint of a run: latest (default), best, or a step")
    args = parser.parse_args(argv)

    def run():
        export(args.model, args.to, args.out, args.step, args.quantization)
        print(f"exported {args.model} ({args.to}) to {args.out}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
