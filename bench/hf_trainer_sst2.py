"""Baseline: fine-tune the same pretrained model on the same data with Hugging Face `Trainer` (PyTorch, CPU).

    python bench/hf_trainer_sst2.py                       # the settings of configs/sst2_minilm.py
    python bench/hf_trainer_sst2.py --max-train-examples 8000   # a quicker (and weaker) run on the first rows

Reads the data, labels, epochs, batch size, learning rate, warmup, weight decay, clipping, max_len and whether the token
embeddings stay frozen from the recipe (`--config`), fine-tunes `AutoModelForSequenceClassification` (BERT's own
[CLS]-pooler head) with `Trainer`, then prints its dev accuracy and wall time next to this project's run
(`RUN_DIR/eval.json`, if it has been trained).
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
    training_args = TrainingArguments(
        output_dir=args.out, num_train_epochs=tcfg.epochs, max_steps=tcfg.steps or -1,
        per_device_train_batch_size=tcfg.batch_size, per_device_eval_batch_size=64,
        learning_rate=tcfg.learning_rate, lr_scheduler_type="linear",
        warmup_steps=int(round(tcfg.warmup_ratio * total_steps)),
        weight_decay=tcfg.weight_decay, max_grad_norm=tcfg.clip_grad_norm or 1e9,
        adam_beta1=tcfg.adam_b1, adam_beta2=tcfg.adam_b2, adam_epsilon=tcfg.adam_eps,
        logging_steps=tcfg.log_every, save_strategy="no", eval_strategy="no", report_to=[], seed=config.seed,
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=False, train_sampling_strategy=args.sampling,
    )  # fmt: skip
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set,
                      data_collator=DataCollatorWithPadding(tokenizer))  # fmt: skip
    started = time.time()
    trainer.train()
    train_seconds = time.time() - started
    predictions = trainer.predict(valid_set)
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())

    ours = {}
    run_dir = args.run or config.directory
    eval_path = os.path.join(run_dir, "eval.json")
    if os.path.isfile(eval_path):
        with open(eval_path, encoding="utf-8") as f:
            ours = json.load(f)
    subset = f" (first {len(train_set):,} training rows)" if limit else ""
    print(f"\nSST-2 dev, {config.pretrained}, {tcfg.epochs} epoch(s), batch {tcfg.batch_size}, "
          f"lr {tcfg.learning_rate}, token embeddings {'frozen' if tcfg.freeze_token_embeddings else 'trained'}, "
          f"HF sampling {args.sampling}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print("| run | train examples | dev accuracy | training wall time |")
    print("|---|---|---|---|")
    print(f"| HF Trainer (PyTorch, CPU){subset} | {len(train_set):,} | {accuracy:.4f} | {train_seconds:.0f} s |")
    if ours:
        seconds = ours.get("wall_seconds", float("nan"))
        examples = cfg.max_train_examples or "all"
        print(f"| this project (JAX, {run_dir}) | {examples} | {ours['accuracy']:.4f} | {seconds:.0f} s |")
    result = {"hf_trainer": {"accuracy": accuracy, "wall_seconds": round(train_seconds, 1),
                             "train_examples": len(train_set), "sampling": args.sampling,
                             "freeze_token_embeddings": tcfg.freeze_token_embeddings,
                             "steps": int(trainer.state.global_step)}, "ours": ours}  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
