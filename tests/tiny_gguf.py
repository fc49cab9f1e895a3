"""A tiny gemma3 GGUF written from scratch (no real weights or vocabulary): for tests of the GGUF conversion path."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_gguf(out: Path, seed: int = 0) -> Path:
    import gguf

    H, L, F, NH, NKV, D = 32, 2, 64, 2, 1, 16
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    pieces = specials + [f"<0x{i:02X}>" for i in range(256)] + ["▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + \
        ["▁the", "▁manual", "▁tempo", "er", "in", "an"]
    types = [3, 3, 3, 2] + [6] * 256 + [1] * (len(pieces) - 260)
    scores = [0.0] * 260 + [-float(i) for i in range(len(pieces) - 260)]
    w = gguf.GGUFWriter(str(out), "gemma3")
    w.add_context_length(512)
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_key_length(D)
    w.add_value_length(D)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_sliding_window(64)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    rng = np.random.default_rng(seed)

    def t(name, *shape, dtype=np.float32):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(dtype))

    t("token_embd.weight", len(pieces), H, dtype=np.float16)
    w.add_tensor("output_norm.weight", np.zeros(H, np.float32))
    for i in range(L):
        b = f"blk.{i}."
        t(b + "attn_q.weight", NH * D, H)
        t(b + "attn_k.weight", NKV * D, H)
        t(b + "attn_v.weight", NKV * D, H)
        t(b + "attn_output.weight", H, NH * D)
        t(b + "ffn_gate.weight", F, H)
        t(b + "ffn_up.weight", F, H)
        t(b + "ffn_down.weight", H, F)
        for n, d in (("attn_norm", H), ("ffn_norm", H), ("post_attention_norm", H), ("post_ffw_norm", H), ("attn_q_norm", D), ("attn_k_norm", D)):
            w.add_tensor(b + n + ".weight", np.zeros(d, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
