"""Data-prep throughput: images/s for caption, tag, mask and precompute, through the stages' backend code.

    python benchmarks/data_prep.py                      # tiny random models on CPU (any machine)
    python benchmarks/data_prep.py --gpu                # real classes at real sizes, random weights, CUDA
    python benchmarks/data_prep.py --gpu --tiny --device cpu --images 4   # the --gpu path, tiny, no GPU

Real sizes (random weights: nothing can be downloaded here): LLaVA-Next 7B (CLIP ViT-L/14-336 + Mistral-7B),
an 8B Llama-3-shaped chat model for the tagger, Grounding DINO T (Swin-T + BERT-base; `--detector base`:
Swin-B), SAM 2.1 hiera-L (`--sam2 b+|s|t` for smaller) and the SDXL VAE at 1024 px. Random weights never
stop generating early, so caption / tag numbers are for the full `max_new_tokens` (a worst case). SAM 2 is
prompted with the detector's 2 best boxes per image, as a portrait gives about that many. Nothing is
asserted; `--out FILE` writes the numbers as JSON (benchmarks/results/ keeps the recorded runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cocoins.backends import tiny  # noqa: E402
from cocoins.backends.chat import generate_chat  # noqa: E402
from cocoins.backends.detections import Detections  # noqa: E402
from cocoins.backends.grounded_sam2 import (GroundedSam2Masker, GroundingDino, GroundingFaceCounter,  # noqa: E402
                                            Sam2Boxes)
from cocoins.backends.llm_taggers import LLMTagger  # noqa: E402
from cocoins.backends.vlm_captioners import LlavaCaptioner  # noqa: E402
from cocoins.data.shards import encode_shard  # noqa: E402
from cocoins.rehearsal.architectures import (LLAVA_IMAGE_PROCESSOR, LLAVA_NEXT, LLAVA_PROCESSOR,  # noqa: E402
                                             LLAVA_VISION, MISTRAL_7B, SDXL_VAE, SWIN_B, SWIN_T)

CAPTIONS = ("A photo of a young man with short black hair, glasses and a smile.",
            "A young man with glasses and short black hair faces the viewer.")
SAM2_CONFIGS = {"t": "sam2.1_hiera_t", "s": "sam2.1_hiera_s", "b+": "sam2.1_hiera_b+", "l": "sam2.1_hiera_l"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(*objects) -> None:
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_images(root: Path, n: int, size: tuple[int, int]) -> pd.DataFrame:
    """n random RGB images (CelebA-aligned size by default) and full subject masks, as an images table."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        path, mask = root / f"{k:06d}.jpg", root / f"{k:06d}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
        m = Image.new("L", size, 0)
        m.paste(255, (size[0] // 4, size[1] // 8, 3 * size[0] // 4, 7 * size[1] // 8))
        m.save(mask)
        rows.append({"image_id": f"{k:06d}", "path": str(path), "mask_path": str(mask), "attributes": "{}",
                     "tagged1": "A photo of a young <subj1>man</subj1>.", "tagged2": "The <subj1>man</subj1>.",
                     "identity": 0})
    return pd.DataFrame(rows)


# ---- models: real-size configs, or the tiny ones, built in memory on the device ------------------------------
# Built under `torch.device(device)` to skip a host copy, then `.to(device)`: a model may create a parameter with an
# explicit device (Grounding DINO's `level_embed` stays on the CPU), and `model.device` reads the first parameter.
def build_llava(real: bool, device, dtype, text_layers: int = 32):
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor, MistralConfig)

    tok = tiny.tiny_tokenizer()
    if not real:
        path = tiny.build_tiny_llava(Path(tempfile.mkdtemp()) / "llava")
        cap = LlavaCaptioner(str(path), CAPTIONS, device, "fp16")
        return cap._load()
    vision = CLIPVisionConfig(**LLAVA_VISION)
    text = MistralConfig(**dict(MISTRAL_7B, num_hidden_layers=text_layers), pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    config = LlavaNextConfig(vision_config=vision, text_config=text, **LLAVA_NEXT,
                             image_token_index=tok.convert_tokens_to_ids("<image>"))
    processor = LlavaNextProcessor(image_processor=LlavaNextImageProcessor(**LLAVA_IMAGE_PROCESSOR), tokenizer=tok,
                                   **LLAVA_PROCESSOR, chat_template=tiny.CHAT_TEMPLATE)
    with torch.device(device):
        model = LlavaNextForConditionalGeneration._from_config(config, dtype=dtype).to(device).eval()
    return processor, model


def build_chat_llm(real: bool, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny.tiny_tokenizer()
    if real:   # Llama-3.1-8B shape
        config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    else:
        config = tiny._llama_config(tok)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype).to(device).eval()
    return tok, model


def build_grounding(real: bool, base: bool, device, dtype):
    from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    if not real:
        path = tiny.build_tiny_grounding_dino(Path(tempfile.mkdtemp()) / "gdino")
        return GroundingDino(str(path), device)._load()
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(tiny.GROUNDING_WORDS)}, do_lower_case=True)
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tok)
    backbone = SwinConfig(**(SWIN_B if base else SWIN_T))   # Grounding DINO B or T
    config = GroundingDinoConfig(backbone_config=backbone, text_config=BertConfig())
    with torch.device(device):
        model = GroundingDinoForObjectDetection._from_config(config, dtype=dtype).to(device).eval()
    return processor, model


class TopBoxes:
    """A detector wrapper keeping each image's `k` best boxes (random heads score hundreds of boxes)."""

    def __init__(self, detector: GroundingDino, k: int = 2):
        self.detector, self.k = detector, k

    def detect(self, images, prompts, box_threshold, text_threshold):
        out = []
        for d, prompt in zip(self.detector.detect(images, prompts, 0.0, 0.0), prompts):
            top = np.argsort(-d.scores)[:self.k]
            out.append(Detections(d.boxes[top].reshape(-1, 4), d.scores[top], [prompt.split(".")[0]] * len(top)))
        return out


def build_vae(real: bool, device, dtype):
    from diffusers import AutoencoderKL

    if not real:
        return tiny_sdxl_vae().to(device)
    with torch.device(device):
        return AutoencoderKL(**SDXL_VAE).to(dtype).to(device).eval()


def tiny_sdxl_vae():
    from cocoins.sdxl.tiny import build_tiny_sdxl

    return build_tiny_sdxl(seed=0).vae


# ---- the four stages ---------------------------------------------------------------------------------------
def timed(fn, n: int, device) -> dict:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    seconds = time.perf_counter() - start
    return {"images": n, "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 3)}


def bench_caption(args, rows, device, dtype) -> dict:
    cap = LlavaCaptioner("benchmark", CAPTIONS, device, batch_size=args.batch, max_new_tokens=args.new_tokens)
    cap._loaded = build_llava(args.real, device, dtype, args.captioner_layers)
    cap.caption_batch(rows.iloc[:1])   # warm-up (kernels, allocator)
    result = timed(lambda: cap.caption_batch(rows), len(rows), device)
    free(cap)
    return result


def bench_tag(args, rows, device, dtype) -> dict:
    tok, lm = build_chat_llm(args.real, device, dtype)
    tagger = LLMTagger("transformers", "benchmark", lambda convs: generate_chat(tok, lm, convs, args.tag_tokens),
                       retries=1, fallback="rules")
    pairs = [CAPTIONS] * len(rows)
    tagger.tag_batch(pairs[:1])

    def run():
        for start in range(0, len(pairs), args.batch):
            tagger.tag_batch(pairs[start:start + args.batch])
    result = timed(run, len(rows), device)
    free(tagger, lm)
    return result


def bench_mask(args, rows, device, dtype) -> dict:
    detector = GroundingDino("benchmark", device)
    detector._loaded = build_grounding(args.real, args.detector == "base", device, dtype)
    if args.real:
        sam = Sam2Boxes(f"configs/sam2.1/{SAM2_CONFIGS[args.sam2]}.yaml", "random", device)
    else:
        sam = Sam2Boxes(tiny.SAM2_CONFIG, "random", device, tiny.SAM2_TINY_OVERRIDES)
    masker = GroundedSam2Masker(TopBoxes(detector), sam, batch_size=args.batch)
    faces = GroundingFaceCounter(detector, threshold=0.35, batch_size=args.batch)
    masker.mask_rows(rows.iloc[:1])

    def run():
        masker.mask_rows(rows)
        faces.count(rows)
    result = timed(run, len(rows), device)
    free(masker, faces, detector, sam)
    return result


def bench_precompute(args, rows, device, dtype) -> dict:
    vae = build_vae(args.real, device, dtype)
    resolution = 1024 if args.real else 32
    encode_shard(vae, rows.iloc[:1], resolution, args.batch)
    result = timed(lambda: encode_shard(vae, rows, resolution, args.batch), len(rows), device)
    free(vae)
    return {**result, "resolution": resolution}


STAGES = {"caption": bench_caption, "tag": bench_tag, "mask": bench_mask, "precompute": bench_precompute}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="real sizes on CUDA (random weights)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (the default without --gpu)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda with --gpu, else cpu)")
    parser.add_argument("--images", type=int, default=None, help="images per stage (default 16 tiny, 64 real)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=60, help="caption tokens generated per prompt")
    parser.add_argument("--tag-tokens", type=int, default=64, help="tagger tokens generated per pair")
    parser.add_argument("--captioner-layers", type=int, default=32,
                        help="Mistral decoder layers of the real-size LLaVA-Next (32: the 7B config)")
    parser.add_argument("--detector", choices=["tiny", "base"], default="tiny", help="Grounding DINO T or B")
    parser.add_argument("--sam2", choices=list(SAM2_CONFIGS), default="l", help="SAM 2.1 hiera size")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    args.real = args.gpu and not args.tiny
    device = torch.device(args.device or ("cuda" if args.gpu else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA device; add --tiny --device cpu to test this path without one")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    n = args.images or (64 if args.real else 16)
    torch.manual_seed(0)
    report = {"mode": "real sizes, random weights" if args.real else "tiny configs", "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "dtype": str(dtype), "batch": args.batch, "torch_threads": torch.get_num_threads(), "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        rows = make_images(Path(tmp), n, (178, 218))
        for name in args.stages.split(","):
            result = STAGES[name](args, rows, device, dtype)
            report["stages"][name] = result
            print(f"{name:>10}: {result['images_per_s']:9.2f} images/s  ({result['images']} images in "
                  f"{result['seconds']:.2f} s)", flush=True)
            if device.type == "cuda":
                report["stages"][name]["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                torch.cuda.reset_peak_memory_stats(device)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
