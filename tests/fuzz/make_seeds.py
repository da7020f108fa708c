#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/.

Small valid inputs and edge cases for each target. Protobuf seeds are
written in text format here and encoded with `protoc --encode` (the
project's protos); nothing else is needed. The output is committed; run this
again after changing it (python3 tests/fuzz/make_seeds.py) and commit the
result. Fuzzing never writes into corpus/: run_fuzzers.sh works on copies.
"""
import json
import math
import os
import shutil
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
PROTO_DIR = os.path.join(ROOT, "proto")
HIDDEN = 64  # hidden size of the targets' SmallConfig models


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def encode(message, text, proto_file):
    return subprocess.run(
        ["protoc", "--proto_path=" + PROTO_DIR, "--encode=moe.v1." + message,
         proto_file],
        input=text.encode(), stdout=subprocess.PIPE, check=True).stdout


def text_bytes(data):
    return '"' + "".join("\\%03o" % b for b in data) + '"'


def f32_rows(rows, cols=HIDDEN, seed=0):
    values = [math.sin(0.37 * i + seed) for i in range(rows * cols)]
    return struct.pack("<%df" % len(values), *values)


def tensor_text(rows, cols=HIDDEN, dtype="DTYPE_F32", shape=None, data=None):
    shape = [rows, cols] if shape is None else shape
    data = f32_rows(rows, cols) if data is None else data
    return ("dtype: %s %s data: %s" %
            (dtype, " ".join("shape: %d" % s for s in shape), text_bytes(data)))


# --- safetensors -----------------------------------------------------------

def safetensors(tensors, metadata=None, pad=0, header_len=None):
    """tensors: [(name, dtype, shape, bytes)] laid out in order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header, separators=(",", ":")) + " " * pad
    n = len(text) if header_len is None else header_len
    return struct.pack("<Q", n) + text.encode() + data


def safetensors_seeds():
    two = safetensors([("a.weight", "F32", [2, 3], f32_rows(2, 3)),
                       ("b.bias", "BF16", [4], bytes(range(8)))],
                      metadata={"format": "pt"}, pad=5)
    write("safetensors", "two_tensors", two)
    write("safetensors", "every_dtype", safetensors(
        [("f64", "F64", [1], bytes(8)), ("i64", "I64", [2], bytes(16)),
         ("u32", "U32", [1], bytes(4)), ("f16", "F16", [2, 1], bytes(4)),
         ("i8", "I8", [3], bytes(3)), ("bool", "BOOL", [1], b"\x01"),
         ("f8", "F8_E4M3", [2], bytes(2)), ("e5", "F8_E5M2", [1], bytes(1))]))
    write("safetensors", "empty_header", safetensors([]))
    write("safetensors", "zero_sized", safetensors(
        [("empty", "F32", [0, 4], b""), ("scalar", "F32", [], bytes(4))]))
    write("safetensors", "truncated", two[:-3])
    write("safetensors", "header_too_long", safetensors(
        [("a", "F32", [1], bytes(4))], header_len=1 << 40))
    write("safetensors", "length_only", struct.pack("<Q", 0))
    bad = safetensors([("a", "F32", [1], bytes(4))])
    write("safetensors", "offsets_past_end",
          bad.replace(b'"data_offsets":[0,4]', b'"data_offsets":[0,9]'))


# --- config.json and topology JSON -------------------------------------------

def json_seeds():
    fixtures = os.path.join(ROOT, "tests", "data", "fixtures")
    for name in sorted(os.listdir(fixtures)):
        config = os.path.join(fixtures, name, "config.json")
        if os.path.isfile(config):
            shutil.copy(config, os.path.join(CORPUS, "model_config", name))
    base = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 512,
            "max_position_embeddings": 4096, "intermediate_size": 96,
            "num_experts_per_tok": 2, "bos_token_id": 1, "eos_token_id": [2, 3],
            "rms_norm_eps": 1e-6, "rope_theta": 1e6}
    write("model_config", "qwen3_moe", json.dumps(dict(
        base, architectures=["Qwen3MoeForCausalLM"], head_dim=32,
        num_experts=8, moe_intermediate_size=96, norm_topk_prob=True,
        decoder_sparse_step=1, mlp_only_layers=[])))
    write("model_config", "olmoe", json.dumps(dict(
        base, model_type="olmoe", num_experts=8, clip_qkv=8.0)))
    write("model_config", "mixtral_sliding", json.dumps(dict(
        base, architectures=["MixtralForCausalLM"], num_local_experts=4,
        sliding_window=32, tie_word_embeddings=True)))
    deepseek = dict(
        base, num_key_value_heads=4, intermediate_size=128,
        n_routed_experts=8, moe_intermediate_size=48, n_shared_experts=2,
        first_k_dense_replace=1, kv_lora_rank=32, qk_nope_head_dim=16,
        qk_rope_head_dim=8, v_head_dim=16)
    write("model_config", "deepseek_v2_lite", json.dumps(dict(
        deepseek, architectures=["DeepseekV2ForCausalLM"], q_lora_rank=None,
        scoring_func="softmax", topk_method="greedy", rope_theta=10000,
        rope_scaling={"type": "yarn", "factor": 40, "mscale": 0.707,
                      "mscale_all_dim": 0.707,
                      "original_max_position_embeddings": 4096})))
    write("model_config", "deepseek_v3", json.dumps(dict(
        deepseek, architectures=["DeepseekV3ForCausalLM"], q_lora_rank=48,
        scoring_func="sigmoid", topk_method="noaux_tc", n_group=4,
        topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
        moe_layer_freq=1, rope_scaling={
            "rope_type": "yarn", "factor": 4, "beta_fast": 32,
            "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 256})))
    write("model_config", "not_an_object", "[1, 2, 3]")
    local = os.path.join(ROOT, "deploy", "local")
    for name in sorted(os.listdir(local)):
        if name.endswith(".json"):
            shutil.copy(os.path.join(local, name),
                        os.path.join(CORPUS, "topology", name[:-5]))
    write("topology", "explicit_all", json.dumps({
        "name": "x", "expert_servers": [
            {"experts": "all", "threads": 2},
            {"name": "e1", "experts": "0:0-7,2:0-7"}],
        "router": {"capacity_factor": 1.25, "overflow": "drop",
                   "per_server_token_cap": 64, "fanout_timeout": 2.5,
                   "threads": 1},
        "attention_servers": [
            {"role": "prefill", "kv_cache_mb": 64, "prefill_chunk_tokens": 16},
            {"role": "decode", "max_running": 8, "prefix_cache": False,
             "kv_lease_seconds": 5, "micro_batches": 2}],
        "gateway": {}}))


# --- protobuf requests -------------------------------------------------------

def proto_seeds():
    gen = "moe/v1/generate.proto"
    requests = {
        "minimal": "prompt_ids: 1 max_tokens: 1",
        "full": ('request_id: "req-1" prompt_ids: [1, 15, 27, 300] '
                 "max_tokens: 8 stop_token_ids: [2, 7] ignore_eos: true "
                 "logprobs: 5 sampling { temperature: 0.7 top_k: 40 top_p: 0.9 "
                 "repetition_penalty: 1.1 seed: 42 }"),
        "greedy_zero_temperature": "prompt_ids: [3, 4] max_tokens: 2 sampling { temperature: 0 }",
        "out_of_vocab": "prompt_ids: [511, 512] max_tokens: 1",
        "too_long": "prompt_ids: [1] max_tokens: 4096",
        "bad_request_id": 'request_id: "a\\nb" prompt_ids: [1] max_tokens: 1',
    }
    for name, text in requests.items():
        write("generate_request", name, encode("GenerateRequest", text, gen))

    ten = "moe/v1/tensor.proto"
    write("tensor_codec", "rows2", encode("Tensor", tensor_text(2), ten))
    write("tensor_codec", "rows0", encode("Tensor", tensor_text(0), ten))
    write("tensor_codec", "bf16", encode(
        "Tensor", tensor_text(1, dtype="DTYPE_BF16", data=bytes(128)), ten))
    write("tensor_codec", "shape3d", encode(
        "Tensor", tensor_text(1, shape=[1, 2, 32]), ten))
    write("tensor_codec", "short_data", encode(
        "Tensor", tensor_text(2, data=bytes(300)), ten))

    exp = "moe/v1/expert.proto"
    groups = {
        "one_group": [(0, 1, 2)],
        "two_layers": [(0, 3, 1), (1, 5, 2), (0, 0, 0)],
        "not_hosted": [(0, 6, 1)],
        "bad_layer": [(9, 0, 1)],
    }
    for name, gs in groups.items():
        text = " ".join("groups { layer: %d expert: %d hidden { %s } }" %
                        (l, e, tensor_text(t)) for l, e, t in gs)
        write("expert_request", name,
              encode("RunExpertsRequest", text + " call_id: 7", exp))

    rt = "moe/v1/router.proto"
    for name, (layer, rows, call_id) in {
            "layer0_unlimited": (0, 3, 0), "layer2_capacity": (2, 6, 1),
            "dense_layer": (1, 1, 0), "empty_batch": (0, 0, 1)}.items():
        write("router_request", name, encode(
            "RunMoeRequest", "layer: %d call_id: %d hidden { %s }" %
            (layer, call_id, tensor_text(rows)), rt))

    att = "moe/v1/attention.proto"
    # SmallConfig(kMixtral): 2 layers, 2 KV heads of 16; 16-token blocks of
    # 2 * 16 * 2 * 16 * 4 bytes.
    for name, (prompt, blocks, block_bytes, address) in {
            "valid": (20, 2, 4096, "127.0.0.1:50051"),
            "one_block": (16, 1, 4096, "decode-0:1"),
            "layout_mismatch": (20, 3, 2048, "127.0.0.1:50051"),
            "no_address": (5, 1, 4096, "")}.items():
        text = ("request { prompt_ids: [%s] max_tokens: 4 } destination { "
                'address: "%s" reservation { reservation_id: 9 num_blocks: %d '
                "block_size: 16 num_layers: 2 block_bytes: %d } }" %
                (", ".join(str(1 + i % 500) for i in range(prompt)), address,
                 blocks, block_bytes))
        write("prefill_request", name, encode("PrefillRequest", text, att))

    # kv_transfer_fuzzer: a 6-token prompt in one 8-token block per layer,
    # 2 layers of 2 * 8 * 2 * 16 * 4 = 2048 bytes per block.
    def chunks(*texts):
        out = b""
        for text in texts:
            body = encode("KvTransferChunk", "reservation_id: 1 " + text, att)
            n = len(body)
            while True:  # varint length prefix
                byte = n & 0x7F
                n >>= 7
                out += bytes([byte | (0x80 if n else 0)])
                if not n:
                    break
            out += body
        return out

    def block(layer, size=2048):
        return "layer: %d first_block: 0 num_blocks: 1 data: %s" % (
            layer, text_bytes(f32_rows(1, size // 4, seed=layer)))

    done = "done { num_tokens: 6 tokens: 5 cached_tokens: 0 queue_seconds: 0.1 prefill_seconds: 0.2 }"
    kv = {
        "complete": (block(0), block(1), done),
        "with_logprobs": (block(0), block(1),
                          "done { num_tokens: 6 tokens: 9 first_logprobs { token_id: 9 "
                          "logprob: -0.5 top { token_id: 9 logprob: -0.5 } top { "
                          "token_id: 3 logprob: -1.5 } } }"),
        "missing_layer": (block(0), done),
        "wrong_size": (block(0, 1024),),
        "bad_block": ("layer: 1 first_block: 1 num_blocks: 1 data: %s" %
                      text_bytes(bytes(2048)),),
        "token_out_of_vocab": (block(0), block(1),
                               "done { num_tokens: 6 tokens: 512 }"),
        "no_done": (block(0), block(1)),
    }
    for name, texts in kv.items():
        write("kv_transfer", name, chunks(*texts))


# Inputs a fuzzer found (kept byte for byte: they are not written by this
# script, so regenerating the corpus must not drop them).
FOUND_BY_FUZZING = {
    "kv_transfer": ["too_many_first_tokens"],
}


def main():
    kept = {}
    for target, names in FOUND_BY_FUZZING.items():
        for name in names:
            with open(os.path.join(CORPUS, target, name), "rb") as f:
                kept[(target, name)] = f.read()
    for target in ("safetensors", "model_config", "topology", "generate_request",
                   "tensor_codec", "expert_request", "router_request",
                   "prefill_request", "kv_transfer"):
        shutil.rmtree(os.path.join(CORPUS, target), ignore_errors=True)
        os.makedirs(os.path.join(CORPUS, target))
    safetensors_seeds()
    json_seeds()
    proto_seeds()
    for (target, name), data in kept.items():
        write(target, name, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
