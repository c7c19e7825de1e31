"""Tiny, randomly initialised vision-language checkpoints built fully offline, for the tests and
the `vlm` benchmark: Qwen2.5-VL, Qwen2-VL and LLaVA, each saved as a checkpoint folder
(config, safetensors weights, a tokenizer trained here with `tokenizers`, its special tokens
and chat template, and the image processor's config)."""
from __future__ import annotations

from pathlib import Path

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
LLAVA_SPECIALS = ["<pad>", "<s>", "</s>", "<image>"]

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")

CORPUS = [
    "<verdict>real</verdict> <verdict>generated</verdict> [[12, 30, 88, 140], [5, 5, 60, 70]]",
    "The region shows smooth texture and repeated patterns typical of a generator.",
    "Edges of the hand look natural; the lighting is consistent; the text is legible.",
    "Look closer at the face, the hair, the background and the boundary of the object.",
    "0123456789 , . ; : ( ) [ ] { } \" ' < > / = - _ + * real generated verdict boxes",
    # everyday English, as any real tokenizer has whole words for: the texts a model is taught
    # then take tens of tokens, not hundreds of bytes
    "Synthesised texture and noise in the marked region does not match the rest of the picture.",
    "Camera-like lighting, noise and edges throughout; natural sensor noise and consistent detail.",
    "The close-up is smoother than a camera records it: nothing points to generation in the whole image.",
    "crop x y in original pixels; first look; the region(s) worth a closer look; explanation; rationale",
]


def _tokenizer(folder: Path, specials: list[str], template: str, bos: str | None, eos: str, pad: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=[s for s in specials if s not in (bos, eos, pad)])
    fast.chat_template = template
    fast.save_pretrained(folder)
    return fast


def build_qwen(folder: Path, version: str = "2.5", seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A Qwen2.5-VL (version "2.5") or Qwen2-VL ("2") checkpoint of ~0.2M parameters (the defaults)."""
    import torch
    from transformers import Qwen2VLImageProcessor
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(folder, QWEN_SPECIALS, QWEN_TEMPLATE, None, "<|im_end|>", "<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=hidden // 16, num_key_value_heads=hidden // 32, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if version == "2.5":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration as M
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration as M
        vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        cfg = Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    model = M(cfg).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder, safe_serialization=True)
    Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=224 * 224, patch_size=14,
                          merge_size=2, temporal_patch_size=2).save_pretrained(folder)
    return folder


def build_llava(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(folder, LLAVA_SPECIALS, LLAVA_TEMPLATE, "<s>", "</s>", "<pad>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in LLAVA_SPECIALS}
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=56, patch_size=14, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                       bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"])
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=ids["<image>"],
                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = ids["</s>"]
    model.generation_config.pad_token_id = ids["<pad>"]
    model.save_pretrained(folder, safe_serialization=True)
    ip = CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                   chat_template=LLAVA_TEMPLATE, num_additional_image_tokens=1).save_pretrained(folder)
    return folder


def _logits_processor_base():
    from transformers import LogitsProcessor
    return LogitsProcessor


class Script(_logits_processor_base()):
    """Forces row b of a generate() call to write answers[b], then end. Raw logits (which the
    backend reads the score from) are left as the model made them."""

    def __init__(self, tokenizer, answers, eos):
        self.ids = [tokenizer.encode(a, add_special_tokens=False) + [eos] for a in answers]
        self.start = None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = input_ids.shape[1] - self.start
        import torch
        forced = torch.full_like(scores, -1e9)
        for b, ids in enumerate(self.ids):
            forced[b, ids[min(step, len(ids) - 1)]] = 0.0
        return forced



BUILDERS = {"qwen2_5_vl": lambda f: build_qwen(f, "2.5"), "qwen2_vl": lambda f: build_qwen(f, "2"),
            "llava": build_llava}
