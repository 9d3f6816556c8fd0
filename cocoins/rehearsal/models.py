"""Random-weight models of the real architectures, saved where and how the pipeline's loaders read them.

Every builder takes `depth` ("full": the published config exactly; "reduced": real widths, heads,
vocabularies, patch sizes and processors, fewer blocks; see architectures.py) and a `seed`, writes
safetensors only (sam2 and FID's Inception: a tensor-only .pt / .pth that `torch.load(weights_only=True)`
reads, the format their loaders take), to a temporary name renamed into place, and returns the path.

Weights are saved in bf16 (`dtype`): the loaders cast to their own dtype (load_pipeline and the data stages
load with an explicit dtype), and the reduced models' real-width embeddings would otherwise be large
(Mistral's 32,064 x 4,096 embedding and head are 1 GB in fp32). The CLIP-score model and FID's Inception are
saved in fp32: their loaders take the file's dtype (CLIPModel.from_pretrained has no dtype argument there).

Models without a builder here:
- ArcFace (insightface): neither insightface nor onnxruntime is installed, and its models are .onnx files
  from the release; nothing here ships the architecture, so the rehearsal runs without the face metrics
  (ArcFace Sim / Div), and says so.
- DreamSim: the `dreamsim` package is installed, but its paper's "ensemble" builds DINO ViT-B/16 through
  `torch.hub.load("facebookresearch/dino:main")` (a GitHub repository, not shipped in any package here) and
  loads LoRA checkpoints from its release; the rehearsal runs without DreamSim.
"""

from __future__ import annotations

import contextlib
import gc
import shutil
from pathlib import Path

import torch

from cocoins.rehearsal import architectures as arch
from cocoins.sdxl.tiny import _seeded


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path):
    """Yield a temporary sibling directory; on success it replaces `out_dir` (a failed build leaves nothing)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


@contextlib.contextmanager
def creating(dtype: torch.dtype, device: str | torch.device = "cpu"):
    """Create parameters directly in `dtype` on `device` (a full-depth SDXL is 14 GB in fp32, 7 GB in bf16;
    initialising LLaVA's 7.6 B parameters is much faster on a GPU). The seed gives other weights per device."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def free() -> None:
    gc.collect()


def save_model(out_dir: str | Path, make_model, processors: tuple, dtype: torch.dtype, seed: int,
               component: int, device: str | torch.device = "cpu") -> Path:
    """Build `make_model()` in `dtype` from its own seeded RNG stream and save it and `processors` (safetensors)."""
    with atomic_dir(out_dir) as tmp, creating(dtype, device), _seeded(seed, component):
        model = make_model()
        model.save_pretrained(tmp, safe_serialization=True)
        for processor in processors:
            processor.save_pretrained(tmp)
        del model
    free()
    return Path(out_dir)


def build_sdxl(out_dir: str | Path, depth: str, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
               device: str | torch.device = "cpu") -> Path:
    """A StableDiffusionXLPipeline directory (model_index.json, unet, vae, both text encoders, both CLIP
    tokenizers with a 77-token window, EulerDiscreteScheduler with SDXL's config), for `load_pipeline`."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from cocoins.sdxl.tokenizer import build_clip_tokenizer

    configs = arch.sdxl_configs(depth)
    with atomic_dir(out_dir) as tmp, creating(dtype, device):
        with _seeded(seed, 0):
            unet = UNet2DConditionModel(**configs["unet"])
        with _seeded(seed, 1):
            vae = AutoencoderKL(**configs["vae"])
        with _seeded(seed, 2):
            text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        with _seeded(seed, 3):
            text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
            tokenizer=build_clip_tokenizer(second=False), tokenizer_2=build_clip_tokenizer(second=True),
            unet=unet, scheduler=EulerDiscreteScheduler(**arch.SDXL_SCHEDULER), force_zeros_for_empty_prompt=True,
            add_watermarker=False)
        pipe.save_pretrained(tmp, safe_serialization=True)
        del pipe, unet, vae, text_encoder, text_encoder_2
    free()
    return Path(out_dir)


def build_clip_vit_l14(out_dir: str | Path, depth: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> Path:
    """CLIPModel of openai/clip-vit-large-patch14 + its tokenizer and image processor (CLIP score folder).

    ClipScorer accepts any local folder with config.json, preprocessor_config.json and safetensors; the
    name needs no "openai" in it (nothing in cocoins/eval/metrics/clip.py reads the name)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from cocoins.sdxl.tokenizer import build_clip_tokenizer

    text, vision = arch.clip_vit_l14_configs(depth)
    # Saved apart, as the hub folder has them: transformers 5's CLIPProcessor.save_pretrained folds the image
    # processor into processor_config.json, and ClipScorer.available asks for preprocessor_config.json.
    processors = (CLIPImageProcessor(**arch.CLIP_VIT_L14_IMAGE_PROCESSOR), build_clip_tokenizer(second=False))
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)
    return save_model(out_dir, lambda: CLIPModel(config), processors, dtype, seed, 10, device)


def inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict of torch-fidelity's FID Inception v3 (the architecture NoTrainInceptionV3 loads)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _RandomInit(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):   # keep the random initialisation
            return None

    with _seeded(seed, 20), _empty_weights() as empty, torch.device("cpu"):
        net = _RandomInit("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
        # He initialisation: with torch's default init the 2048-d features shrink to ~1e-8 over the ~20 conv
        # layers (the batch norms hold unit running statistics), and FID's covariances become degenerate.
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


@contextlib.contextmanager
def _empty_weights():
    """An empty tensor dict on disk: the extractor's constructor reads a path before building."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "empty.pth"
        torch.save({}, path)
        yield path


def build_fid_inception(out_path: str | Path, seed: int = 0) -> Path:
    """FID Inception weights as `eval.fid_weights` takes them: a tensor-only .pth (or .safetensors by suffix)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = inception_state_dict(seed)
    tmp = out.with_name(f".{out.name}.building")
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(tmp))
    else:
        torch.save(state, tmp)
    tmp.replace(out)
    return out


def parameter_count(path: str | Path) -> int:
    """Parameters stored under `path` (safetensors headers, or a tensor-only .pt / .pth), read without loading."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors")) + sorted(path.rglob("*.pt"))
    total = 0
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(f), "pt") as sf:
                for key in sf.keys():
                    total += _numel(sf.get_slice(key).get_shape())
        else:
            state = torch.load(f, map_location="meta", weights_only=True)
            state = state.get("model", state)
            total += sum(v.numel() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())
    return total


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def disk_bytes(path: str | Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
