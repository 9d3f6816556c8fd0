"""Typed schema of params.yaml.

Stages call `load_params()` first; a wrong key, type or value stops the stage with one line naming the
key and the fix, before anything is written. The rest of the library takes these dataclasses (or plain
arguments) and never reads params.yaml itself.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import yaml


class ParamsError(ValueError):
    """A params.yaml problem, phrased so that the message alone tells the user what to change."""


@dataclass(frozen=True)
class DataParams:
    source: Literal["synthetic", "celeba", "folder"] = "synthetic"
    root: str = "data/world"
    seed: int = 0
    identities: int = 24
    images_per_identity: int = 4
    two_person_images: int = 4
    image_size: int = 64
    limit: Optional[int] = None
    split: Optional[Literal["train", "val", "test"]] = None


Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class CaptionParams:
    backend: Literal["attributes", "llava", "ollama"] = "attributes"
    seed: int = 0
    model: str = "llava-hf/llava-v1.6-mistral-7b-hf"   # llava: hub id or local dir; ollama: model name
    prompts: tuple[str, ...] = ("Describe the person in this photo in one sentence.",
                                "Write a short caption for this photo, describing the person's appearance.")
    max_new_tokens: int = 60
    host: str = "http://127.0.0.1:11434"               # ollama
    timeout: float = 120.0
    retries: int = 3
    retry_wait: float = 1.0
    batch_size: int = 8
    chunk_size: int = 256
    device: Device = "auto"
    dtype: Dtype = "fp16"


@dataclass(frozen=True)
class TagParams:
    backend: Literal["rules", "ollama", "transformers"] = "rules"
    fallback: Literal["rules", "none"] = "rules"
    model: str = "llama3.1:8b"        # ollama: model name; transformers: hub id or local dir of a chat model
    host: str = "http://127.0.0.1:11434"
    timeout: float = 60.0
    retries: int = 3
    retry_wait: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 8
    chunk_size: int = 256
    device: Device = "auto"
    dtype: Dtype = "bf16"


@dataclass(frozen=True)
class MaskParams:
    backend: Literal["dataset", "grounded_sam2"] = "dataset"
    face_counter: Literal["mtcnn", "grounding", "annotation"] = "mtcnn"
    max_faces: int = 1
    detector_impl: Literal["transformers", "groundingdino"] = "transformers"   # which Grounding DINO code
    detector: str = "IDEA-Research/grounding-dino-base"    # Grounding DINO (transformers): hub id or local dir
    groundingdino_config: str = "models/groundingdino/GroundingDINO_SwinT_OGC.py"   # (groundingdino) the config .py
    groundingdino_checkpoint: str = "models/groundingdino/groundingdino_swint_ogc.pth"
    groundingdino_text_encoder: str = "models/bert-base-uncased"   # local BERT dir the config's text encoder names
    groundingdino_min_size: int = 800                      # short side the images are resized to
    groundingdino_max_size: int = 1333                     # long side at most
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    face_threshold: float = 0.35                           # box threshold for the "face" prompt
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_l.yaml"  # a config packaged with sam2
    sam2_checkpoint: str = "models/sam2/sam2.1_hiera_large.pt"  # "random": random weights (tests only)
    sam2_overrides: Optional[tuple[str, ...]] = None       # hydra overrides for build_sam2 (tests: tiny)
    batch_size: int = 8
    chunk_size: int = 256
    device: Device = "auto"
    dtype: Dtype = "fp32"


@dataclass(frozen=True)
class ModelParams:
    sdxl: str = "tiny"     # tiny (random weights) | mini (trained by the base stage) | a hub id | a local dir
    seed: int = 0


@dataclass(frozen=True)
class MiniParams:
    """models.sdxl: mini -- how the base stage trains the mini SDXL (cocoins/world/pretrain.py)."""
    corpus_seed: int = 1000
    corpus_images: int = 4000
    describe_share: float = 0.6
    named_people: int = 0
    named_images: int = 5
    name_share: float = 0.8
    train_used_rows: bool = False
    vae_steps: int = 3000
    vae_batch: int = 16
    vae_lr: float = 3e-3
    unet_steps: int = 2500
    unet_batch: int = 64
    unet_lr: float = 1e-3
    text_context: int = 40     # tokens per prompt (SDXL: 77): MiniArchitecture.text_context
    cpu_threads: int = 2       # fixed, so the trained weights are the same bits on any CPU


@dataclass(frozen=True)
class DiagnoseParams:
    """Ceilings of the mini-world (cocoins/world/oracles.py): what words, one free token and names carry."""
    world_seed: int = 5000
    identities: int = 8
    seeds: int = 6
    ti_images: int = 24
    ti_steps: int = 400
    ti_batch: int = 8
    ti_lr: float = 5e-2
    steps: int = 20
    guidance: float = 5.0
    cpu_threads: int = 2


@dataclass(frozen=True)
class IdentityParams:
    """The exact identity metric of the synthetic world: a trait classifier (cocoins/world/traits.py)."""
    backend: Literal["traits", "none"] = "traits"
    seed: int = 0
    image_size: int = 32
    steps: int = 800
    train_images: int = 3000
    batch_size: int = 64
    reconstruct_share: float = 0.5   # share of each batch shown through the base model's VAE
    min_accuracy: float = 0.75       # traits read less accurately (held out, through the VAE) leave the embedding
    check_images: int = 8            # base-model check: images per prompted trait value (0: no check)
    cpu_threads: int = 2


@dataclass(frozen=True)
class PrecomputeParams:
    resolution: int = 32
    shard_size: int = 1024
    batch_size: int = 16
    vae: Optional[str] = None    # a VAE dir / hub id replacing the base model's (e.g. the fp16-safe SDXL VAE)
    device: Device = "auto"
    dtype: Dtype = "fp32"


@dataclass(frozen=True)
class MapperParams:
    code_dim: int = 256
    layers: int = 8
    hidden_dim: int = 256
    init: Literal["pytorch", "words"] = "pytorch"
    init_words: tuple[str, ...] = ("man", "woman", "person")
    fixed_norm: bool = False
    odd: bool = False


@dataclass(frozen=True)
class TripletParams:
    same_prompt: bool = False
    same_noise: bool = False
    min_timestep: int = 0


@dataclass(frozen=True)
class LossParams:
    distance: Literal["mse"] = "mse"
    negative: Literal["reciprocal", "subtract", "none"] = "reciprocal"
    schedule: bool = True
    mask: bool = True
    background: bool = True
    gamma: float = 1e-5
    beta: float = 2.0
    lambda_con: float = 1.0
    lambda_back: float = 30.0
    margin: float = 0.05
    reciprocal_of: Literal["sample", "batch"] = "sample"


@dataclass(frozen=True)
class TrainParams:
    objective: Literal["contrastive", "noise_prediction"] = "contrastive"
    steps: int = 40
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.2
    warmup_steps: int = 4
    checkpoint_every: int = 20
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # "fp32" rather than accelerate's "no": DVC rewrites params.yaml on `exp run -S` and YAML 1.1 reads no as false.
    mixed_precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1   # micro-batches per process; batch_size stays the global batch
    # Samples per process per forward pass; set, it replaces gradient_accumulation_steps with
    # batch_size / (processes x micro_batch_size), so one setting fits 1 to 8 GPUs.
    micro_batch_size: Optional[int] = None


@dataclass(frozen=True)
class PromptParams:
    subjects: tuple[str, ...] = ("man", "woman", "boy", "girl", "person")
    scenes_per_subject: int = 2
    backend: Literal["builtin", "ollama", "world"] = "builtin"   # world: the synthetic world's own scenes
    scenes_per_setting: int = 50              # ollama: scenes asked for per setting (Appendix D: fifty)
    model: str = "llama3.1:8b"                # ollama: model name
    host: str = "http://127.0.0.1:11434"
    timeout: float = 300.0                    # seconds per request (one answer holds 50 scenes)
    retries: int = 3


@dataclass(frozen=True)
class EvalParams:
    identities_per_subject: int = 3
    seeds_per_prompt: int = 2
    steps: int = 4
    guidance: float = 5.0
    resolution: int = 32
    batch_size: int = 8
    seed: int = 1234
    cpu_threads: int = 1                      # torch threads when rendering on CPU (fixed: same bits anywhere)
    device: Device = "auto"                   # auto | cpu | cuda (under accelerate launch: each process its own GPU)
    # independent: its own initial noise per (identity, prompt, repeat), as the paper's Sim / Div; shared: per
    # (prompt, repeat), so all codes of a subject start from the same noises (the paper's Figs. 8-9 only).
    noise: Literal["independent", "shared"] = "independent"
    scene_identities_per_subject: Optional[int] = None   # Scenes renders each subject's first N codes (null: all)
    bootstrap_resamples: int = 1000           # per 95% interval of every Sim / Div / scene fidelity (0: none)
    face_backend: Literal["dlib", "arcface", "none"] = "dlib"
    arcface_dir: Optional[str] = None         # local insightface model folder (*.onnx), for face_backend: arcface
    clip_model: Optional[str] = "openai/clip-vit-large-patch14"  # hub id in the local HF cache, or a local dir
    dreamsim_cache: Optional[str] = None      # folder with the DreamSim checkpoints (nothing is downloaded)
    dreamsim_type: Literal["ensemble", "dino_vitb16", "dinov2_vitb14", "open_clip_vitb32", "clip_vitb32"] = "ensemble"
    fid_weights: Optional[str] = None         # torch-fidelity's FID Inception weights (.pth or .safetensors)
    strict: bool = False                      # true: an absent metric model is an error instead of null
    # auto: bf16 on CUDA (the SDXL VAE overflows in fp16 without an fp32 upcast; bf16 does not), fp32 on CPU
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    interpolation_steps: int = 6              # Fig. 8: images along the slerp between two codes
    neighbor_codes: int = 12                  # Fig. 9: codes ranked by pseudo-word cosine (paper: 100)


@dataclass(frozen=True)
class LaunchParams:
    """How `dvc repro` starts the stages that can run as several processes (dvc.yaml templates `${launch.*}`)."""
    data: str = "python"          # caption, tag, mask, precompute: python | accelerate launch [options]
    train: str = "python"
    evaluate: str = "python"
    # Seconds a process waits at a collective for the others (torch's NCCL default is 600): the main process
    # gathers and scores alone at the end of evaluate and of a data stage while the others wait.
    barrier_timeout_s: int = 7200


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    caption: CaptionParams = field(default_factory=CaptionParams)
    tag: TagParams = field(default_factory=TagParams)
    mask: MaskParams = field(default_factory=MaskParams)
    models: ModelParams = field(default_factory=ModelParams)
    mini: MiniParams = field(default_factory=MiniParams)
    identity: IdentityParams = field(default_factory=IdentityParams)
    diagnose: DiagnoseParams = field(default_factory=DiagnoseParams)
    precompute: PrecomputeParams = field(default_factory=PrecomputeParams)
    mapper: MapperParams = field(default_factory=MapperParams)
    triplet: TripletParams = field(default_factory=TripletParams)
    loss: LossParams = field(default_factory=LossParams)
    train: TrainParams = field(default_factory=TrainParams)
    prompts: PromptParams = field(default_factory=PromptParams)
    eval: EvalParams = field(default_factory=EvalParams)
    launch: LaunchParams = field(default_factory=LaunchParams)


# Values that must be strictly positive; zero or negative would divide by zero or loop forever.
_POSITIVE = {
    "data.identities", "data.images_per_identity", "data.image_size", "data.limit",
    "mask.max_faces", "precompute.resolution", "precompute.shard_size", "precompute.batch_size",
    "caption.max_new_tokens", "caption.timeout", "caption.retries", "caption.batch_size", "caption.chunk_size",
    "tag.timeout", "tag.retries", "tag.max_new_tokens", "tag.batch_size", "tag.chunk_size",
    "mask.batch_size", "mask.chunk_size", "mask.groundingdino_min_size", "mask.groundingdino_max_size",
    "mapper.code_dim", "mapper.layers", "mapper.hidden_dim", "train.steps", "train.batch_size",
    "train.gradient_accumulation_steps", "train.micro_batch_size", "launch.barrier_timeout_s",
    "train.lr", "train.checkpoint_every", "prompts.scenes_per_subject",
    "prompts.scenes_per_setting", "prompts.timeout", "prompts.retries",
    "eval.identities_per_subject", "eval.seeds_per_prompt", "eval.steps", "eval.resolution",
    "eval.batch_size", "eval.cpu_threads", "eval.interpolation_steps", "eval.neighbor_codes",
    "eval.scene_identities_per_subject",
    "mini.corpus_images", "mini.vae_steps", "mini.vae_batch", "mini.vae_lr", "mini.unet_steps", "mini.unet_batch",
    "mini.unet_lr", "mini.text_context", "mini.cpu_threads", "mini.named_images", "diagnose.identities", "diagnose.seeds",
    "diagnose.ti_images", "diagnose.ti_steps", "diagnose.ti_batch", "diagnose.ti_lr", "diagnose.steps",
    "diagnose.cpu_threads", "identity.image_size", "identity.steps", "identity.train_images",
    "identity.batch_size", "identity.cpu_threads",
}
_NON_NEGATIVE = {"data.two_person_images", "caption.retry_wait", "tag.retry_wait", "mask.box_threshold",
                 "mask.text_threshold", "mask.face_threshold", "train.warmup_steps", "train.weight_decay", "loss.gamma",
                 "loss.beta", "loss.lambda_con", "loss.lambda_back", "loss.margin", "mini.describe_share",
                 "mini.named_people", "mini.name_share",
                 "identity.reconstruct_share", "identity.min_accuracy", "identity.check_images",
                 "eval.bootstrap_resamples"}


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + _describe(typing.get_args(tp)[0]) + " values"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(key: str, value, tp):
    """Return `value` as type `tp`, or raise ParamsError naming `key` and what is allowed."""
    origin = typing.get_origin(tp)
    bad = ParamsError(f"params.yaml: {key} = {value!r} is not allowed; set it to {_describe(tp)}")
    if origin is typing.Union:
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ParamsError:
                pass
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise bad
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce(key, v, item_tp) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "1e-5" (no dot) as a string; accept it rather than surprise the user.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str) and value:
            return value
        raise bad
    raise TypeError(f"unsupported schema type {tp} for {key}")


def _build(group_cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml: {prefix} must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(group_cls)
    names = {f.name for f in dataclasses.fields(group_cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ParamsError(f"params.yaml: unknown key {prefix}.{unknown[0]}; known keys in {prefix}: "
                          + ", ".join(sorted(names)))
    values = {}
    for name in names:
        if name not in raw:
            continue
        key = f"{prefix}.{name}"
        value = _coerce(key, raw[name], hints[name])
        if value is not None and not isinstance(value, (str, bool, tuple)):
            if key in _POSITIVE and value <= 0:
                raise ParamsError(f"params.yaml: {key} = {value!r} must be greater than 0")
            if key in _NON_NEGATIVE and value < 0:
                raise ParamsError(f"params.yaml: {key} = {value!r} must be 0 or greater")
        values[name] = value
    return group_cls(**values)


def parse_params(raw: dict, base_dir: str | os.PathLike = ".", check_paths: bool = True) -> Params:
    """Validate a params mapping (as read from params.yaml) into typed `Params`.

    check_paths=False skips whether data.root exists: a profile written on one machine for another is
    checked for keys, types and values only.
    """
    if not isinstance(raw, dict):
        raise ParamsError("params.yaml must be a mapping of groups (data, caption, ...) to their keys")
    hints = typing.get_type_hints(Params)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ParamsError(f"params.yaml: unknown group {unknown[0]!r}; known groups: "
                          + ", ".join(sorted(hints)))
    groups = {name: _build(hints[name], raw.get(name) or {}, name) for name in hints}
    params = Params(**groups)
    _check_semantics(params, Path(base_dir), check_paths)
    return params


def _check_semantics(p: Params, base_dir: Path, check_paths: bool = True) -> None:
    if p.data.source != "synthetic" and check_paths:
        root = base_dir / p.data.root
        if not root.is_dir():
            raise ParamsError(
                f"params.yaml: data.root = {p.data.root!r} does not exist (data.source = {p.data.source}); "
                "point it at the dataset folder, or set data.source: synthetic")
    if p.data.split is not None and p.data.source != "celeba":
        raise ParamsError("params.yaml: data.split only applies to data.source: celeba; set it to null")
    if p.train.warmup_steps >= p.train.steps:
        raise ParamsError(f"params.yaml: train.warmup_steps ({p.train.warmup_steps}) must be smaller than "
                          f"train.steps ({p.train.steps})")
    if p.precompute.resolution % 8:
        raise ParamsError(f"params.yaml: precompute.resolution = {p.precompute.resolution} must be a "
                          "multiple of 8 (VAE downsampling)")
    for key, value in (("mini.describe_share", p.mini.describe_share), ("mini.name_share", p.mini.name_share),
                       ("identity.reconstruct_share", p.identity.reconstruct_share),
                       ("identity.min_accuracy", p.identity.min_accuracy)):
        if value > 1:
            raise ParamsError(f"params.yaml: {key} = {value} is a share; set it between 0 and 1")
    if p.mini.corpus_images < max(p.mini.vae_batch, p.mini.unet_batch):
        raise ParamsError(f"params.yaml: mini.corpus_images ({p.mini.corpus_images}) must be at least "
                          "mini.vae_batch and mini.unet_batch")
    if p.identity.train_images < p.identity.batch_size:
        raise ParamsError(f"params.yaml: identity.train_images ({p.identity.train_images}) must be at least "
                          f"identity.batch_size ({p.identity.batch_size})")
    if p.identity.image_size < 8 or p.identity.image_size & (p.identity.image_size - 1):
        raise ParamsError(f"params.yaml: identity.image_size = {p.identity.image_size} must be a power of two, 8 or more")
    if p.prompts.backend == "world" and p.data.source != "synthetic":
        raise ParamsError("params.yaml: prompts.backend: world uses the synthetic world's scenes; with "
                          f"data.source: {p.data.source} set it to builtin or ollama")
    for key, command in (("launch.data", p.launch.data), ("launch.train", p.launch.train),
                         ("launch.evaluate", p.launch.evaluate)):
        words = command.split()
        if not (words[:1] in (["python"], ["python3"]) and len(words) == 1) and words[:2] != ["accelerate", "launch"]:
            raise ParamsError(f"params.yaml: {key} = {command!r}: use `python` (one process) or `accelerate launch` "
                              "with its options (for example `accelerate launch --num_processes 4`)")
    if p.eval.resolution % 8:
        raise ParamsError(f"params.yaml: eval.resolution = {p.eval.resolution} must be a multiple of 8")


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError with a one-line fix on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found; run the stage from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    return parse_params(raw or {}, base_dir=path.parent)
