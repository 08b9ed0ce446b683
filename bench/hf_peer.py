"""Hugging Face `Trainer` on PyTorch, the peer of `--suite=peer`.

`bench/run.py` starts this script once, under the peer interpreter (see
`bench/peer_env.py`), never under painless_tf's own:

    PEER_PYTHON bench/hf_peer.py SPEC.json RESULT.json

It imports torch, transformers and the standard library only, so that
PyTorch never becomes a dependency of painless_tf, and writes the result
fields `bench/workloads.py` writes, measured the same way:

- An *update* is one optimizer step on one global batch of
  `global_batch_size` rows (no gradient accumulation); its end is read in
  `TrainerCallback.on_step_end`, after the optimizer step (PyTorch on a CPU
  is synchronous: the step's work is done when it returns).
- The first `warmup` updates are not timed; the next `updates` are.
- `time_to_first_step_s`: from the start of `main` (imports excluded;
  reading and tokenizing the data, loading the model, building the
  `Trainer` included) to the end of the first update.
- Examples and tokens are counted on the rows of the timed updates, tokens
  from the collated attention masks (padding not counted).
- Time to accuracy (optional): validation accuracy every `eval_every`
  updates with the clock stopped; training runs `epochs` full epochs, then
  the test split is evaluated.

What a careful CPU user sets: `DataCollatorWithPadding` (pad each batch to
its longest row), length-grouped sampling, truncation at `max_length`
tokens, bfloat16 autocast only on a CPU with avx512_bf16 or amx_bf16, every
core for PyTorch's threads, no data-loader workers (tokenized rows in
memory), no evaluation or checkpoints during training, no reporting.
"""

import dataclasses
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import transformers

# Bytes per KiB: Linux reports `ru_maxrss` and VmRSS in KiB.
_KIB = 1024
_MIB = 2**20
# CPU flags with bfloat16 matmul instructions (/proc/cpuinfo).
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class StepClock(transformers.TrainerCallback):
    """Records when each optimizer update ends, minus evaluation pauses.

    Args:
        evaluate: callable or None. `evaluate(model) -> accuracy`, run every
            `eval_every` updates with the clock stopped, until `target`.
        eval_every: int. Updates between evaluations.
        target: float or None. Accuracy after which evaluation stops.
    """

    def __init__(self, *, evaluate=None, eval_every=0, target=None):
        self.evaluate = evaluate
        self.eval_every = int(eval_every)
        self.target = target
        self.update_ends = []  # perf_counter() - evaluation seconds
        self.evaluations = []  # (update, training seconds, accuracy)
        self.eval_seconds = 0.0
        self.reached_at = None  # index into update_ends
        self.global_steps = []  # TrainerState.global_step at each end

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.update_ends.append(time.perf_counter() - self.eval_seconds)
        self.global_steps.append(state.global_step)
        done = len(self.update_ends)
        if (self.evaluate is not None and self.reached_at is None
                and self.eval_every and done % self.eval_every == 0):
            start = time.perf_counter()
            accuracy = float(self.evaluate(model))
            self.eval_seconds += time.perf_counter() - start
            self.evaluations.append((done, self.update_ends[-1], accuracy))
            if self.target is not None and accuracy >= self.target:
                self.reached_at = done - 1
        return control


class CountingCollator:
    """`DataCollatorWithPadding` that records what each batch holds.

    With no data-loader workers the collator runs in the training process,
    once per batch and in order, so the i-th record is the i-th update's
    batch (a loader that looks one batch ahead only records it earlier).
    """

    def __init__(self, collator):
        self.collator = collator
        self.batches = []  # (rows, real tokens, positions)
        self.lengths = []  # real length of every row, per batch

    def __call__(self, features):
        batch = self.collator(features)
        mask = batch["attention_mask"]
        self.batches.append(
            (int(mask.shape[0]), int(mask.sum()), int(mask.numel())))
        self.lengths.append(mask.sum(dim=1).tolist())
        return batch


def bf16_supported(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU's flags include a bfloat16 matmul instruction set."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _BF16_FLAGS)
    except OSError:
        pass
    return False


def peak_rss_mib():
    """This program's peak resident memory, MiB (`VmHWM`, as
    `bench/workloads.py` reads it; `ru_maxrss` where /proc is missing)."""
    peak = _proc_status_mib("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _KIB / _MIB


def _proc_status_mib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * _KIB / _MIB
    except OSError:
        pass
    return None


def _read_rows(path):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row["text"] for row in rows], [int(row["label"]) for row in rows]


def _features(tokenizer, path, max_length):
    """Tokenized rows (unpadded) with their labels, as `Trainer` takes them."""
    texts, labels = _read_rows(path)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    names = list(encoded.keys())
    return [
        {**{name: encoded[name][i] for name in names}, "labels": labels[i]}
        for i in range(len(texts))
    ]


def _accuracy(model, features, collator, batch_size, bf16):
    """Accuracy on `features`, batches of similar length, no gradients."""
    ordered = sorted(features, key=lambda f: len(f["input_ids"]))
    correct = 0
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16,
                                         enabled=bf16):
        for i in range(0, len(ordered), batch_size):
            batch = collator(ordered[i:i + batch_size])
            labels = batch.pop("labels")
            logits = model(**batch).logits
            correct += int((logits.argmax(-1) == labels).sum())
    model.train(was_training)
    return correct / len(ordered)


def _training_arguments(spec, *, output_dir, bf16, max_steps, epochs,
                        warmup_steps):
    kwargs = dict(
        output_dir=output_dir,
        per_device_train_batch_size=spec["global_batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=spec["learning_rate"],
        weight_decay=spec["weight_decay"],
        max_grad_norm=spec["clip_norm"],
        lr_scheduler_type="linear",
        warmup_steps=warmup_steps,
        num_train_epochs=epochs,
        max_steps=max_steps,
        bf16=bf16,
        use_cpu=True,
        dataloader_num_workers=0,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=spec["seed"],
    )
    names = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    # transformers 5 replaced `group_by_length=True` with a sampling
    # strategy; either way it is the LengthGroupedSampler.
    if "group_by_length" in names:
        kwargs["group_by_length"] = True
    else:
        kwargs["train_sampling_strategy"] = "group_by_length"
    return transformers.TrainingArguments(**kwargs)


def train(spec, started):
    """Fine-tunes the spec's model with `Trainer`; the result dict."""
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(spec["seed"])
    bf16 = bf16_supported()
    data = spec["data_dir"]
    max_length = spec["max_length"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["model_path"])
    train_rows = _features(tokenizer, os.path.join(data, "train.jsonl"),
                           max_length)
    num_labels = spec["num_labels"]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        spec["model_path"], num_labels=num_labels)
    batch = spec["global_batch_size"]
    warmup, updates = spec["warmup"], spec["updates"]
    tta = spec.get("time_to_accuracy")
    padding = transformers.DataCollatorWithPadding(tokenizer)
    collator = CountingCollator(padding)
    evaluate = None
    if tta:
        validation = _features(
            tokenizer, os.path.join(data, "validation.jsonl"), max_length)

        def evaluate(model):
            return _accuracy(model, validation, padding, batch, bf16)

        epochs = spec["epochs"]
        max_steps = -1  # every epoch
        total = math.ceil(len(train_rows) / batch) * epochs
    else:
        epochs = 1
        max_steps = warmup + updates
        total = max_steps
    clock = StepClock(evaluate=evaluate,
                      eval_every=tta["eval_every"] if tta else 0,
                      target=tta["target"] if tta else None)
    args = _training_arguments(
        spec, output_dir=os.path.join(data, "hf_output"), bf16=bf16,
        max_steps=max_steps, epochs=epochs,
        warmup_steps=math.ceil(spec["warmup_fraction"] * total))
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=train_rows,
        data_collator=collator, processing_class=tokenizer,
        callbacks=[clock])
    rss_before = _proc_status_mib("VmRSS")
    trainer.train()
    result = _summarize(spec, clock, collator, started)
    result.update(
        precision="mixed_bfloat16" if bf16 else "float32",
        sequence_length=max_length,
        global_batch_size=batch,
        micro_batch_size=batch,
        accumulation_steps=1,
        rss_before_fit_mib=rss_before,
        torch_threads=torch.get_num_threads(),
        sampling=getattr(args, "train_sampling_strategy", None)
        or ("group_by_length" if args.group_by_length else "random"),
        optimizer=args.optim if isinstance(args.optim, str)
        else args.optim.value,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        total_updates=total,
        versions={"torch": torch.__version__,
                  "transformers": transformers.__version__,
                  "python": sys.version.split()[0]},
    )
    if tta:
        test = _features(tokenizer, os.path.join(data, "test.jsonl"),
                         max_length)
        result["time_to_accuracy"] = _tta_result(clock, tta, started)
        result["epochs"] = epochs
        result["test_accuracy"] = _accuracy(model, test, padding, batch, bf16)
    return result


def _summarize(spec, clock, collator, started):
    warmup, updates = spec["warmup"], spec["updates"]
    ends = clock.update_ends
    if len(ends) < warmup + updates:
        raise RuntimeError(
            f"only {len(ends)} updates ran; the benchmark needs warmup + "
            f"updates = {warmup + updates}. Use more data or fewer --updates.")
    if clock.global_steps != list(range(1, len(ends) + 1)):
        raise RuntimeError(
            "Trainer's global steps are not one per on_step_end call: "
            f"{clock.global_steps[:5]}...")
    if len(collator.batches) < len(ends):
        raise RuntimeError(
            f"{len(collator.batches)} batches collated for {len(ends)} "
            "updates: the batch records do not match the updates.")
    timed = collator.batches[warmup:warmup + updates]
    examples = sum(rows for rows, _, _ in timed)
    tokens = sum(real for _, real, _ in timed)
    positions = sum(p for _, _, p in timed)
    start = ends[warmup - 1]
    seconds = ends[warmup + updates - 1] - start
    steps = [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])][
        :updates]
    return {
        # For the runner's FLOPs per token (the formula is painless_tf's).
        "timed_lengths": [n for lengths in collator.lengths[
            warmup:warmup + updates] for n in lengths],
        "timed_updates": updates,
        "timed_seconds": seconds,
        "examples_per_sec": examples / seconds,
        "real_tokens_per_sec": tokens / seconds,
        "padding_fraction": 1.0 - tokens / positions,
        "update_seconds_median": statistics.median(steps),
        "update_seconds_mean": sum(steps) / len(steps),
        "time_to_first_step_s": ends[0] - started,
        "updates_run": len(ends),
    }


def _tta_result(clock, tta, started):
    ends = clock.update_ends
    reached = clock.reached_at
    return {
        "target": tta["target"],
        "reached": reached is not None,
        "seconds": ends[reached] - started if reached is not None else None,
        "updates": reached + 1 if reached is not None else None,
        "evaluations": [
            {"update": u, "seconds": t - started, "accuracy": a}
            for u, t, a in clock.evaluations
        ],
        "updates_run": len(ends),
        "gave_up_after_seconds": None,
    }


def main(argv):
    started = time.perf_counter()
    started_wall = time.time()
    if len(argv) != 3:
        print("usage: PYTHON bench/hf_peer.py SPEC.json RESULT.json",
              file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        spec = json.load(f)
    load_start = os.getloadavg()
    rss_start = _proc_status_mib("VmRSS")
    result = train(spec, started)
    result.update(
        peak_rss_mib=peak_rss_mib(),
        ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        * _KIB / _MIB,
        rss_after_imports_mib=rss_start,
        load_average={"start": list(load_start), "end": list(os.getloadavg())},
        wall_seconds=time.perf_counter() - started,
        first_step_unix_time=started_wall + result["time_to_first_step_s"],
    )
    with open(argv[2], "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
