"""Preflight of the data stages (caption, tag, mask, precompute): what each will need, checked in seconds.

One function per stage, from its params group; each returns one line per problem, naming the fix (empty:
ready). Built on cocoins/checks.py: models by local directory or hub id, files, packages; nothing loads
weights. An ollama server is asked `show(model)` once, with a short timeout: that one request tells a
stopped server (connection refused), a hung one (timeout) and a model that was never pulled (404) apart.
The offline backends (attributes, rules, dataset masks) need nothing and have no problems.

Each stage calls its function through `cocoins.checks.require` before its first item; `cocoins preflight`
calls all of them at once.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from cocoins.backends.chat import unavailable_fix
from cocoins.checks import dir_problems, file_problems, model_problems, package_problems
from cocoins.config import CaptionParams, MaskParams, PrecomputeParams, TagParams

SHOW_TIMEOUT = 5.0   # seconds: /api/show reads a manifest, a live server answers in milliseconds
MAKE_INSTALL = "`make install`"
GROUNDINGDINO_IMPORTS = ("groundingdino", "timm", "addict", "yapf")   # the package and its extra's modules


def device_problems(device: str, option: str) -> list[str]:
    """`cuda` asked for where no GPU is visible (`auto` falls back to the CPU and is never a problem)."""
    if device != "cuda":
        return []
    import torch

    return [] if torch.cuda.is_available() else [
        f"{option}: cuda but no CUDA GPU is visible; set it to auto or cpu, or run on a GPU machine"]


def ollama_problems(host: str, model: str, option: str, vision: bool = False) -> list[str]:
    """The server at `host` answers and has `model` pulled (and, for `vision`, the model reads images)."""
    problems = package_problems("ollama", f"{option}.backend: ollama", MAKE_INSTALL)
    if problems:
        return problems
    import httpx
    import ollama

    try:
        shown = ollama.Client(host=host, timeout=SHOW_TIMEOUT).show(model)
    except ConnectionError:
        return [f"{option}.host: no ollama server at {host} (connection refused); " + unavailable_fix(host, model, option)]
    except (httpx.TimeoutException, httpx.TransportError) as err:
        return [f"{option}.host: ollama at {host} did not answer in {SHOW_TIMEOUT:g} s ({type(err).__name__}); "
                + unavailable_fix(host, model, option)]
    except ollama.ResponseError as err:
        if err.status_code == 404:
            return [f"{option}.model: {model} is not pulled on the ollama server at {host}; run `ollama pull {model}` "
                    f"there, or set {option}.model to a model it has (`ollama list`)"]
        return [f"{option}.host: ollama at {host} answered {err.status_code} ({str(err.error)[:100]}); "
                + unavailable_fix(host, model, option)]
    except json.JSONDecodeError as err:   # a body that is not JSON: something else listens on that port
        return [f"{option}.host: {host} does not answer like an ollama server ({str(err)[:80]}); set {option}.host "
                "to the ollama server's address"]
    except ValueError:   # JSON of another ollama release's shape: the server is up and has the model
        return []
    capabilities = getattr(shown, "capabilities", None)
    if vision and capabilities and "vision" not in capabilities:
        return [f"{option}.model: {model} does not read images (capabilities: {', '.join(capabilities)}); "
                "use a vision model such as llava:7b"]
    return []


def caption_problems(p: CaptionParams) -> list[str]:
    """What `caption` needs: LLaVA-Next's model (dir or hub id), or an ollama server with a vision model."""
    if p.backend == "llava":
        return model_problems(p.model, "caption.model") + device_problems(p.device, "caption.device")
    if p.backend == "ollama":
        return ollama_problems(p.host, p.model, "caption", vision=True)
    return []


def tag_problems(p: TagParams) -> list[str]:
    """What `tag` needs: an ollama server with the model pulled, or a local chat model (dir or hub id)."""
    if p.backend == "ollama":
        return ollama_problems(p.host, p.model, "tag")
    if p.backend == "transformers":
        return model_problems(p.model, "tag.model") + device_problems(p.device, "tag.device")
    return []


def sam2_config_problems(config: str) -> list[str]:
    """A SAM 2 config is a path inside the sam2 package (hydra's `pkg://sam2` search path)."""
    spec = importlib.util.find_spec("sam2")
    roots = list(spec.submodule_search_locations or []) if spec else []
    if any((Path(root) / config).is_file() for root in roots):
        return []
    return [f"mask.sam2_config: {config} is not a config packaged with sam2; use one of its configs, e.g. "
            "configs/sam2.1/sam2.1_hiera_l.yaml (hiera_l for sam2.1_hiera_large.pt)"]


def detector_problems(p: MaskParams) -> list[str]:
    """Grounding DINO: transformers' port (dir or hub id), or the original package with config, checkpoint, BERT."""
    if p.detector_impl == "transformers":
        return model_problems(p.detector, "mask.detector")
    problems = [line for module in GROUNDINGDINO_IMPORTS
                for line in package_problems(module, "mask.detector_impl: groundingdino", MAKE_INSTALL)]
    problems += file_problems(p.groundingdino_config, "mask.groundingdino_config",
                              "use the config .py that belongs to the checkpoint (GroundingDINO_SwinT_OGC.py)")
    problems += file_problems(p.groundingdino_checkpoint, "mask.groundingdino_checkpoint",
                              "download it (groundingdino_swint_ogc.pth) and set this path")
    problems += (dir_problems(p.groundingdino_text_encoder, "mask.groundingdino_text_encoder",
                              "save bert-base-uncased there (config, weights, vocab)")
                 or model_problems(p.groundingdino_text_encoder, "mask.groundingdino_text_encoder"))
    if p.dtype != "fp32":
        problems.append(f"mask.dtype: {p.dtype} with mask.detector_impl: groundingdino; the original package runs "
                        "in fp32, set mask.dtype: fp32")
    return problems


def mask_problems(p: MaskParams, all_annotated: bool = False) -> list[str]:
    """What `mask` needs: Grounding DINO and SAM 2 for grounded_sam2 masks or grounding face counts, MTCNN.

    `all_annotated`: every image carries a face count (the synthetic world), so a missing MTCNN falls back
    to the annotation and is no problem; preflight before ingest cannot know, and says what to install.
    """
    problems = device_problems(p.device, "mask.device")
    if p.backend == "grounded_sam2":
        missing = package_problems("sam2", "mask.backend: grounded_sam2", MAKE_INSTALL + " (sam2==1.1.0)")
        problems += missing or sam2_config_problems(p.sam2_config)
        if p.sam2_checkpoint != "random":
            problems += file_problems(p.sam2_checkpoint, "mask.sam2_checkpoint",
                                      "download the SAM 2 checkpoint (sam2.1_hiera_large.pt) and set this path")
    if p.backend == "grounded_sam2" or p.face_counter == "grounding":
        problems += detector_problems(p)
    if p.face_counter == "mtcnn" and not all_annotated:
        problems += package_problems("facenet_pytorch", "mask.face_counter: mtcnn",
                                     MAKE_INSTALL + " (facenet-pytorch, --no-deps), or set mask.face_counter: "
                                                    "annotation")
    return problems


def vae_problems(vae: str) -> list[str]:
    """`precompute.vae`: a VAE dir / hub id (config.json), or a diffusers model dir holding `vae/`."""
    if (Path(vae).expanduser() / "vae" / "config.json").is_file():
        return []
    return model_problems(vae, "precompute.vae")


def sdxl_problems(sdxl: str) -> list[str]:
    """The base SDXL precompute reads (its tokenizers always, its VAE unless precompute.vae is set).

    `tiny` and `mini` are built by the base stage, so there is nothing to check before it ran; a directory
    holding `reference.json` (models/base) is followed to the model it names.
    """
    if sdxl in ("tiny", "mini"):
        return []
    path = Path(sdxl).expanduser()
    if (path / "reference.json").is_file():
        try:
            sdxl = json.loads((path / "reference.json").read_text())["sdxl"]
        except (ValueError, KeyError, TypeError):
            return [f"{path / 'reference.json'} is not {{\"sdxl\": \"<hub id or dir>\"}}; rerun `dvc repro base`"]
    return model_problems(sdxl, "models.sdxl", marker="model_index.json")


def precompute_problems(p: PrecomputeParams, sdxl: str) -> list[str]:
    """What `precompute` needs: the base SDXL (`models.sdxl`, or models/base) and `precompute.vae` if set."""
    problems = sdxl_problems(sdxl) + device_problems(p.device, "precompute.device")
    if p.vae:
        problems += vae_problems(p.vae)
    return problems
