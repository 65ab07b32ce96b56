"""Worker process for tests/test_classify.py: classification fine-tuning on 8 simulated CPU devices.

  python tests/classify_mesh_worker.py MODEL_DIR DATA_DIR OUT

XLA_FLAGS (the number of simulated devices) must be set before JAX is imported, hence a separate process. Writes
OUT/result.json: the largest difference between parameters trained on a (data 4, model 2) FSDP mesh and on one
device, how a kernel was sharded, and the report of a full `train_classifier` run on the 8-device mesh.
"""

import os
import sys

if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"

import dataclasses  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jax_transformer.config import ClassifyConfig, ClassifyDataConfig, ClassifyTrainConfig, MeshConfig  # noqa: E402
from jax_transformer.data import classification as cdata  # noqa: E402
from jax_transformer.interop import bert  # noqa: E402
from jax_transformer.tasks.classification import build_model, classification_steps, train_classifier  # noqa: E402
from jax_transformer.train import sharding  # noqa: E402


def main(model_dir: str, data_dir: str, out: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    config = ClassifyConfig(
        name="mesh", run_dir=os.path.join(out, "run"), pretrained=model_dir,
        data=ClassifyDataConfig(path=data_dir, train_file="train.tsv", valid_file="dev.tsv", max_len=16,
                                length_bucket_step=16),
        train=ClassifyTrainConfig(steps=3, batch_size=16, eval_every=3, log_every=1, learning_rate=1e-3,
                                  warmup_ratio=0.0),
    )  # fmt: skip
    model_config = bert.bert_model_config(model_dir)
    tokenizer = cdata_tokenizer(model_dir)
    dataset, _ = cdata.load_dataset(os.path.join(data_dir, "train.tsv"), config.data, ["0", "1"], tokenizer, 48)
    rows = list(zip(dataset.texts, dataset.labels.tolist(), strict=True))
    batches = cdata.ClassificationStream(rows, tokenizer, 16, 16, 16, model_config.pad_id, seed=0)
    data = [batch for batch, _ in zip(batches, range(3), strict=False)]

    trained = {}
    for name, mesh_cfg, devices in (("one", MeshConfig(data=1), jax.devices()[:1]),
                                    ("mesh", MeshConfig(data=4, model=2, fsdp=True), None)):  # fmt: skip
        run_config = dataclasses.replace(config, mesh=mesh_cfg)
        model = build_model(model_config, 2, run_config, seed=0)
        bert.load_bert_weights(model, model_dir)
        steps = classification_steps(run_config, model, 3, mesh=sharding.make_mesh(mesh_cfg, devices))
        state = steps.init_state(nnx.state(model, nnx.Param))
        for batch in data:
            state, _ = steps.train_step(state, steps.shard_batch(batch))
        trained[name] = jax.tree.map(np.asarray, jax.device_get(state["params"]))
        if name == "mesh":
            kernel = state["params"]["encoder"]["layers"][0]["self_attn"]["query"]["kernel"]
            spec = str(tuple(kernel.sharding.spec))
    diff = max(float(np.abs(a - b).max()) for a, b in
               zip(jax.tree.leaves(trained["one"]), jax.tree.leaves(trained["mesh"]), strict=True))  # fmt: skip

    report = train_classifier(dataclasses.replace(config, mesh=MeshConfig(data=8, fsdp=True)))
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"max_diff": diff, "query_kernel_spec": spec, "report": report}, f)


def cdata_tokenizer(model_dir):
    from jax_transformer.tasks.classification import load_tokenizer

    return load_tokenizer(model_dir)


if __name__ == "__main__":
    main(*sys.argv[1:4])
