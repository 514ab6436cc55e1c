# Builds two variants of the weight-only-int8 MiniLM ONNX model (fp32 dequantised, dynamic int8)
# and times all three with onnxruntime on the same SciFact batches (sorted by length, batch 32,
# 2 threads). Usage: model-variants.py MODEL.onnx OUT_DIR N_DOCS TOKENIZER.json CORPUS.jsonl.gz
import gzip, json, time, sys, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper, helper
from onnxruntime.quantization import quantize_dynamic, QuantType
from tokenizers import Tokenizer
src = sys.argv[1]; out = sys.argv[2]; n_docs = int(sys.argv[3])
m = onnx.load(src)
# 1. dequantise: fold Cast(int8 weight) -> float initializers; ORT's optimizer then folds the
#    scale Mul as well, so this is the "fp32" model.
inits = {i.name: i for i in m.graph.initializer}
new_nodes = []
for n in m.graph.node:
    if n.op_type == "Cast" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8:
        arr = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
        m.graph.initializer.append(numpy_helper.from_array(arr, n.output[0]))
        continue
    new_nodes.append(n)
del m.graph.node[:]; m.graph.node.extend(new_nodes)
used = {i for n in m.graph.node for i in n.input}
keep = [i for i in m.graph.initializer if i.name in used]
del m.graph.initializer[:]; m.graph.initializer.extend(keep)
onnx.save(m, f"{out}/fp32.onnx")
# 2. dynamic int8 (MatMulInteger, u8 activations x s8 weights: VNNI kernels on this CPU)
quantize_dynamic(f"{out}/fp32.onnx", f"{out}/dyn_int8.onnx", weight_type=QuantType.QInt8)
tok = Tokenizer.from_file(sys.argv[4]); tok.no_padding(); tok.enable_truncation(512)
docs = []
with gzip.open(sys.argv[5], "rt") as f:
    for line in f:
        d = json.loads(line); docs.append(d["title"] + "\n" + d["text"])
        if len(docs) >= n_docs: break
docs.sort(key=len, reverse=True)
tok.enable_padding()
batches = []
for i in range(0, len(docs), 32):
    enc = tok.encode_batch(docs[i:i+32])
    ids = np.array([e.ids for e in enc], dtype=np.int64); mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    batches.append((ids, mask))
def run(path):
    so = ort.SessionOptions(); so.intra_op_num_threads = 2
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    outs = []; t = time.perf_counter()
    for ids, mask in batches:
        h = s.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        v = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True); outs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return time.perf_counter() - t, np.concatenate(outs)
res = {}
for name, path in [("int8_weights (default)", src), ("fp32 dequantised", f"{out}/fp32.onnx"), ("dynamic int8 (VNNI)", f"{out}/dyn_int8.onnx")]:
    secs, vecs = run(path); res[name] = (secs, vecs)
base = res["int8_weights (default)"][1]
for name, (secs, vecs) in res.items():
    cos = float(np.mean(np.sum(vecs * base, axis=1)))
    print(f"{name:24s} {len(docs)/secs:6.1f} docs/s  {secs:6.1f} s  mean cos vs default {cos:.4f}")
