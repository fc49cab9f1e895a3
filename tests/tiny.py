"""The tiny test model: a 2-layer Gemma3 (hidden 64) with a 512-token byte-level BPE.

Built deterministically from a fixed corpus and seed with no network, in well
under a second; a 4 x 128 forward+backward takes milliseconds. It is the same
architecture as the default model, so every code path (sliding-window layers,
tied embeddings, NF4 Linear4bit) is exercised.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: What is the capital of France?\nAnswer: Paris",
    "Instruction: Explain how to reset the router.\nResponse: Hold the reset button for ten seconds.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The Zephyr X2 thermostat stores schedules in flash memory and syncs every hour.",
    "I don't know. The answer is unknown. Cannot be determined. Not enough information.",
    "He was a doctor. She was a nurse. They were engineers from many countries.",
    "Alice, Bob, Carol and Dave met in Berlin, Tokyo, Lima and Nairobi in 1999.",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 yes no true false A B C D",
] * 20


def build_tiny_model(folder: Path, seed: int = 0, vocab_size: int = 512) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)

    config = Gemma3TextConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,  # every Linear4bit out-dim a multiple of 32, as bitsandbytes CPU repack needs
        max_position_embeddings=1024,
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tok.token_to_id("<pad>"),
        eos_token_id=tok.token_to_id("<eos>"),
        bos_token_id=bos,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
