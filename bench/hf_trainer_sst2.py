"""Baseline: fine-tune the same pretrained model on the same data with Hugging Face `Trainer` (PyTorch, CPU).

    python bench/hf_trainer_sst2.py                       # the settings of configs/sst2_minilm.py
    python bench/hf_trainer_sst2.py --max-train-examples 8000   # a quicker (and weaker) run on the first rows

Reads the data, labels, epochs, batch size, learning rate, warmup, weight decay, clipping, max_len, whether the token
embeddings stay frozen, and how often the dev set is evaluated from the recipe (`--config`), fine-tunes
`AutoModelForSequenceClassification` (BERT's own [CLS]-pooler head) with `Trainer`, evaluating dev accuracy every
`train.eval_every` updates and at the end, as our trainer does: the same number of evaluations of the same epochs.
It prints both selection rules for both sides: the best of those dev evaluations (what our run's eval.json reports:
its best checkpoint) and the last checkpoint, next to this project's run (`RUN_DIR/eval.json` and the dev accuracies
in `RUN_DIR/metrics.jsonl`, if it has been trained). What differs besides, and stays so: our recipe's mean pooling,
R-Drop, EMA and bf16 (the Trainer runs fp32 with its [CLS] head), printed in the header.
A benchmark: it prints figures, nothing asserts them.
"""

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/sst2_minilm.py")
    parser.add_argument("--max-train-examples", type=int, default=0, help="first N training rows only (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="runs/hf_trainer_sst2", help="Trainer output directory")
    parser.add_argument("--run", default="", help="our run to compare with (default: the config's)")
    parser.add_argument("--eval-every", type=int, default=0, help="dev evaluation every N updates (0: the config's)")
    parser.add_argument(
        "--sampling", default="group_by_length", choices=["group_by_length", "random"],
        help="Trainer's train_sampling_strategy: group_by_length (default; batches of similar lengths, as our length "
        "buckets) or random (the Trainer's default, more padding)",
    )  # fmt: skip
    args = parser.parse_args()

    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from jax_transformer.config import load_any_config
    from jax_transformer.data import classification as cdata
    from jax_transformer.interop import bert
    from jax_transformer.train.run_log import read_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_any_config(args.config)
    cfg, tcfg = config.data, config.train
    model_dir = bert.resolve_pretrained(config.pretrained)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_path, valid_path = (os.path.join(cfg.path, f) for f in (cfg.train_file, cfg.valid_file))
    limit = args.max_train_examples or cfg.max_train_examples
    labels = cfg.label_list or cdata.infer_labels(cdata.read_rows(train_path, cfg, limit))

    def dataset(path, n):
        texts, label_ids = cdata.validate_rows(cdata.read_rows(path, cfg, n), labels, path, cfg.skip_bad_rows)
        encoded = tokenizer(texts, truncation=True, max_length=cfg.max_len)
        columns = zip(encoded["input_ids"], encoded["attention_mask"], label_ids, strict=True)
        return [{"input_ids": ids, "attention_mask": mask, "labels": int(y)} for ids, mask, y in columns]

    train_set, valid_set = dataset(train_path, limit), dataset(valid_path, cfg.max_valid_examples)
    total_steps = tcfg.steps or tcfg.epochs * -(-len(train_set) // tcfg.batch_size)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
    if tcfg.freeze_token_embeddings:  # Trainer's AdamW only takes parameters that require gradients
        model.get_input_embeddings().weight.requires_grad_(False)
    eval_every = args.eval_every or tcfg.eval_every
    training_args = TrainingArguments(
        output_dir=args.out, num_train_epochs=tcfg.epochs, max_steps=tcfg.steps or -1,
        per_device_train_batch_size=tcfg.batch_size, per_device_eval_batch_size=64,
        learning_rate=tcfg.learning_rate, lr_scheduler_type="linear",
        warmup_steps=int(round(tcfg.warmup_ratio * total_steps)),
        weight_decay=tcfg.weight_decay, max_grad_norm=tcfg.clip_grad_norm or 1e9,
        adam_beta1=tcfg.adam_b1, adam_beta2=tcfg.adam_b2, adam_epsilon=tcfg.adam_eps,
        logging_steps=tcfg.log_every, save_strategy="no", eval_strategy="steps", eval_steps=eval_every,
        report_to=[], seed=config.seed, use_cpu=True, dataloader_num_workers=0, disable_tqdm=False,
        train_sampling_strategy=args.sampling,
    )  # fmt: skip

    def compute_metrics(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=valid_set,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)  # fmt: skip
    started = time.time()
    trainer.train()
    train_seconds = time.time() - started  # dev evaluations included, as in our run's wall time
    history = [(int(r["step"]), float(r["eval_accuracy"])) for r in trainer.state.log_history if "eval_accuracy" in r]
    last_step = int(trainer.state.global_step)
    if not history or history[-1][0] != last_step:  # our trainer also evaluates after the last update
        history.append((last_step, float(trainer.evaluate()["eval_accuracy"])))
    best_step, best = max(history, key=lambda item: item[1])
    last = history[-1][1]

    ours, our_history = {}, []
    run_dir = args.run or config.directory
    eval_path = os.path.join(run_dir, "eval.json")
    if os.path.isfile(eval_path):
        with open(eval_path, encoding="utf-8") as f:
            ours = json.load(f)
        our_history = [(r["step"], r["accuracy"]) for r in read_metrics(run_dir)
                       if r.get("kind") == "valid" and "accuracy" in r]  # fmt: skip
    subset = f" (first {len(train_set):,} training rows)" if limit else ""
    print(f"\nSST-2 dev, {config.pretrained}, {tcfg.epochs} epoch(s), batch {tcfg.batch_size}, "
          f"lr {tcfg.learning_rate}, token embeddings {'frozen' if tcfg.freeze_token_embeddings else 'trained'}, "
          f"dev evaluated every {eval_every} updates and at the end; HF: fp32, [CLS] pooler head, sampling "
          f"{args.sampling}, torch threads {torch.get_num_threads()}; ours: {config.pooling} pooling, R-Drop "
          f"{tcfg.rdrop_alpha}, EMA {tcfg.ema_decay}, bf16 {tcfg.bf16}")  # fmt: skip
    print("| run | train examples | updates | dev evaluations | best dev evaluation (step) | last checkpoint | "
          "training wall time |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    print(f"| HF Trainer (PyTorch, CPU){subset} | {len(train_set):,} | {last_step:,} | {len(history)} | "
          f"{best:.4f} ({best_step}) | {last:.4f} | {train_seconds:.0f} s |")  # fmt: skip
    if ours:
        seconds = ours.get("wall_seconds", float("nan"))
        examples = cfg.max_train_examples or "all"
        last_ours = f"{our_history[-1][1]:.4f}" if our_history else "?"
        print(f"| this project (JAX, {run_dir}) | {examples} | {ours.get('steps', '?'):,} | {len(our_history)} | "
              f"{ours['accuracy']:.4f} ({ours.get('step', '?')}) | {last_ours} | {seconds:.0f} s |")  # fmt: skip
    result = {"hf_trainer": {"best_accuracy": best, "best_step": best_step, "last_accuracy": last,
                             "evaluations": history, "wall_seconds": round(train_seconds, 1),
                             "train_examples": len(train_set), "sampling": args.sampling,
                             "freeze_token_embeddings": tcfg.freeze_token_embeddings,
                             "steps": last_step}, "ours": ours, "ours_evaluations": our_history}  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
