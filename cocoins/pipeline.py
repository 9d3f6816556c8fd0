"""`CoCoInsPipeline`: the trained mapper on an SDXL model, in diffusers' shape.

    pipe = CoCoInsPipeline.from_pretrained("models/base", mapper="models/mapper").to("cuda")
    out = pipe("a <subj1>woman</subj1> reading in a cafe", subjects=[7], seed=1)
    out.images[0].save("cafe.png"); out.codes        # [1, S, c]: the codes used
    pipe("<alice>woman</alice> and <bob>man</bob> at a cafe", seed=2)   # characters from pipe.library

A subject is a code seed (int), a code tensor [c], a code file (str / Path, from `cocoins sample-code`) or a
`Character`. Prompts name subjects with `<subjN>` tags (codes from `subjects`, in order) or with character
names (codes from the library). The CLI, story mode and the web app all render through `__call__`, so the
same arguments give the same pixels everywhere; `output.sidecars` are what `cocoins generate --sidecar`
replays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence, Union

import torch
from PIL import Image

from cocoins.characters.codes import code_from_seed, file_sha256, read_code_file
from cocoins.characters.library import Character, CharacterLibrary
from cocoins.characters.prompts import resolve_prompt
from cocoins.runtime import UserError

Subject = Union[int, torch.Tensor, str, os.PathLike, Character]
MAX_SIDE = 4096          # pixels; beyond this a request is a typo, not a picture
MAX_STEPS = 1000         # the scheduler's training timesteps
MAX_GUIDANCE = 100.0


@dataclass
class CoCoInsOutput:
    images: list[Image.Image]
    codes: torch.Tensor | None          # [N, S, c] the codes used (None without a mapper)
    prompts: list[str]                  # in <subjN> form, as rendered
    seeds: list[int]
    sidecars: list[dict] = field(default_factory=list)   # one per image: replays it (`cocoins generate --sidecar`)


class CoCoInsPipeline:
    """An SDXL pipeline plus the CoCoIns mapper f (Eq. 3). Wraps a diffusers `StableDiffusionXLPipeline`."""

    def __init__(self, sdxl, mapper=None, model_name: str = "", mapper_dir: str | None = None,
                 library: CharacterLibrary | str | os.PathLike | None = None):
        from cocoins.sdxl.encode import PromptEncoder

        self.sdxl, self.mapper, self.model_name, self.mapper_dir = sdxl, mapper, model_name, mapper_dir
        self.encoder = PromptEncoder.from_pipeline(sdxl)
        self.library = library if isinstance(library, CharacterLibrary) or library is None \
            else CharacterLibrary(library)
        self.mapper_sha256 = None
        if mapper is not None:
            from cocoins.method.mapper import mapper_fingerprint

            self.mapper_sha256 = mapper_fingerprint(mapper_dir) if mapper_dir else _tensor_fingerprint(mapper)
        self._offload_device: torch.device | None = None

    # ---- construction and placement (diffusers' names) -------------------------------------------------
    @classmethod
    def from_pretrained(cls, base: str | os.PathLike, mapper: str | os.PathLike | None = None,
                        torch_dtype: torch.dtype = torch.float32, variant: str | None = None,
                        vae: str | os.PathLike | None = None,
                        library: CharacterLibrary | str | os.PathLike | None = None) -> "CoCoInsPipeline":
        """Load the base SDXL (dir, hub id or `models/base`) and the mapper dir; everything on the CPU.

        `vae`: another AutoencoderKL to decode with, e.g. an fp16-safe SDXL VAE (madebyollin/sdxl-vae-fp16-fix)
        so that fp16 decoding needs no fp32 upcast.
        """
        from cocoins.method.mapper import Mapper
        from cocoins.sdxl.load import load_pipeline

        sdxl = load_pipeline(base, device="cpu", dtype=torch_dtype, variant=variant)
        if vae is not None:
            sdxl.vae = _load_vae(vae, torch_dtype)
        net = None
        if mapper is not None:
            try:
                net = Mapper.from_pretrained(mapper).eval().requires_grad_(False)
            except (OSError, ValueError) as err:
                raise UserError(f"--mapper {mapper}: not a trained mapper directory ({err}); use models/mapper "
                                "after `dvc repro train`") from None
        return cls(sdxl, net, model_name=str(base), mapper_dir=None if mapper is None else str(mapper),
                   library=library)

    def to(self, device: str | torch.device) -> "CoCoInsPipeline":
        self.sdxl.to(device)
        if self.mapper is not None:
            self.mapper.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self._offload_device or self.sdxl.device

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep each model on the CPU until it runs (diffusers' model offload); the mapper is tiny and stays."""
        self._offload_device = torch.device(device)
        self.sdxl.enable_model_cpu_offload(device=self._offload_device)
        if self.mapper is not None:
            self.mapper.to(self._offload_device)

    def enable_vae_slicing(self) -> None:
        """Decode a batch one image at a time."""
        self.sdxl.vae.enable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode large images in overlapping tiles (peak memory no longer grows with the image area)."""
        self.sdxl.vae.enable_tiling()

    @property
    def default_size(self) -> int:
        """The model's own image side: diffusers' `default_sample_size * vae_scale_factor` (1024 for SDXL)."""
        return int(self.sdxl.default_sample_size * self.sdxl.vae_scale_factor)

    @property
    def code_dim(self) -> int | None:
        return None if self.mapper is None else int(self.mapper.config.code_dim)

    # ---- rendering ----------------------------------------------------------------------------------------
    def __call__(self, prompt: str | Sequence[str], subjects: Sequence[Subject] | None = None,
                 seed: int | Sequence[int] = 0, num_inference_steps: int = 30, guidance_scale: float = 5.0,
                 height: int | None = None, width: int | None = None, negative_prompt: str | None = None,
                 batch_size: int = 1, show_progress: bool = False) -> CoCoInsOutput:
        """Render each prompt with its subjects' pseudo-words; image i's noise comes from seed i alone.

        Args:
            prompt: one prompt or a list; `<subjN>` tags or character names (`<alice>woman</alice>`).
            subjects: one per `<subjN>`, in order, shared by every prompt (not used with character names);
                or a list of such lists, one per prompt.
            seed: the initial-noise seed, one for all prompts or one per prompt.
            height, width: default to the model's own size (`default_size`); multiples of 8.
            batch_size: prompts rendered per UNet batch (speed only: seeds fix each image).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise UserError("no prompt given")
        seeds = [seed] * len(prompts) if isinstance(seed, int) else list(seed)
        if len(seeds) != len(prompts):
            raise UserError(f"got {len(seeds)} seeds for {len(prompts)} prompts; give one seed, or one per prompt")
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        self.check_settings(num_inference_steps, guidance_scale, height, width, batch_size)
        per_prompt = _per_prompt(subjects, len(prompts))
        tagged, codes, records = [], [], []
        for p, own in zip(prompts, per_prompt):
            resolved = resolve_prompt(p)
            z, recs = self._codes_for(resolved, own)
            tagged.append(resolved.tagged)
            codes.append(z)
            records.append(recs)
        if self.mapper is not None and len({c.shape[0] for c in codes}) > 1:
            raise UserError("in one call every prompt needs the same number of subjects; split the call")
        stacked = torch.stack(codes) if self.mapper is not None else None
        images = self.render(tagged, stacked, seeds, num_inference_steps, guidance_scale, height, width,
                             negative_prompt, batch_size, show_progress)
        settings = {"negative_prompt": negative_prompt, "steps": num_inference_steps, "guidance": guidance_scale,
                    "height": height, "width": width, "model": self.model_name, "device": str(self.device)}
        mapper_record = None if self.mapper is None else {"dir": self.mapper_dir, "sha256": self.mapper_sha256}
        sidecars = [{"prompt": t, "seed": s, **settings, "codes": r, "mapper": mapper_record}
                    for t, s, r in zip(tagged, seeds, records)]
        return CoCoInsOutput(images, stacked, tagged, seeds, sidecars)

    def check_settings(self, steps: int, guidance: float, height: int, width: int, batch_size: int = 1) -> None:
        check_settings(steps, guidance, height, width, batch_size, self.default_size)

    def _codes_for(self, resolved, subjects: Sequence[Subject] | None) -> tuple[torch.Tensor, list[dict]]:
        """The codes [S, c] of one resolved prompt and their sidecar records."""
        if self.mapper is None:
            if subjects or resolved.names:
                raise UserError("subjects and character names need a mapper; load the pipeline with "
                                "mapper=<trained mapper dir> (CLI: --mapper models/mapper)")
            return torch.zeros(0), []
        if resolved.names:
            if subjects:
                raise UserError("the prompt names its characters; drop subjects=[...] (they go with <subjN> tags)")
            if self.library is None:
                raise UserError("the prompt names characters but no character library is set; pass library=... "
                                "(CLI: --library DIR)")
            subjects = [self.library.get(name) for name in resolved.names]
        subjects = list(subjects or [])
        if resolved.subjects == 0:
            raise UserError("the prompt has no subject tag; tag the subject to keep, e.g. "
                            "\"a <subj1>woman</subj1> in a cafe\" or \"<alice>woman</alice> in a cafe\"")
        if len(subjects) != resolved.subjects:
            raise UserError(f"the prompt has {resolved.subjects} subject(s); give exactly one code per subject, in "
                            f"<subjN> order (got {len(subjects)})")
        pairs = [self._code(s) for s in subjects]
        return torch.stack([z for z, _ in pairs]), [r for _, r in pairs]

    def _code(self, subject: Subject) -> tuple[torch.Tensor, dict]:
        c = self.code_dim
        if isinstance(subject, Character):
            subject.check_mapper(self.mapper_sha256, c)
            return subject.z.float(), subject.record()
        if isinstance(subject, bool):
            raise UserError(f"a subject must be a code seed, a code tensor, a code file or a Character, got {subject}")
        if isinstance(subject, int):
            return code_from_seed(subject, c), {"code_seed": int(subject)}
        if isinstance(subject, torch.Tensor):
            z = subject.detach().float().cpu().flatten()
            if z.numel() != c:
                raise UserError(f"a code has {z.numel()} values; this mapper takes c = {c}")
            return z, {"z": z.tolist()}
        if isinstance(subject, (str, os.PathLike)):
            z = read_code_file(subject, c)
            return z, {"code_file": str(subject), "sha256": file_sha256(subject), "z": z.tolist()}
        raise UserError(f"a subject must be a code seed, a code tensor, a code file or a Character, "
                        f"got {type(subject).__name__}")

    def pseudo_words(self, codes: torch.Tensor) -> torch.Tensor:
        """w = f(z) (Eq. 3) for codes [..., c], in fp32 on the mapper's device.

        One code at a time: a batched matmul may round differently, and a code's pseudo-word must not depend
        on what else is rendered with it (the API, CLI, story and app then agree bit for bit).
        """
        from cocoins.method.mapper import pseudo_words_one_by_one

        return pseudo_words_one_by_one(self.mapper, codes)

    def render(self, tagged: Sequence[str], codes: torch.Tensor | None, seeds: Sequence[int], steps: int,
               guidance: float, height: int, width: int, negative_prompt: str | None = None, batch_size: int = 1,
               show_progress: bool = False) -> list[Image.Image]:
        """The images of `<subjN>` prompts [N] with codes [N, S, c] (None: plain prompts), checked inputs."""
        from tqdm.auto import tqdm

        from cocoins.sdxl.generate import generate

        words = None if codes is None else self.pseudo_words(codes)
        images = []
        for i in tqdm(range(0, len(tagged), batch_size), desc="render",
                      disable=not show_progress or len(tagged) <= batch_size):
            chunk = None if words is None else words[i:i + batch_size]
            images += generate(self.sdxl, self.encoder, tagged[i:i + batch_size], chunk, seeds[i:i + batch_size],
                               steps=steps, guidance=guidance, height=height, width=width,
                               negative_prompt=negative_prompt).images
        return images


def _per_prompt(subjects, n: int) -> list:
    """`subjects` for each of n prompts: one list shared by all, or one list per prompt."""
    if subjects and all(isinstance(s, (list, tuple)) for s in subjects):
        if len(subjects) != n:
            raise UserError(f"got subject lists for {len(subjects)} prompts, not {n}; give one list per prompt")
        return list(subjects)
    return [subjects] * n


def check_settings(steps: int, guidance: float, height: int | None, width: int | None, batch_size: int = 1,
                   default_size: int | None = None) -> None:
    """UserError naming the setting (API argument and CLI option) and the fix, before any model runs.
    A None height / width (the model's own size) is not checked."""
    own = f" (this model's own size is {default_size})" if default_size else ""
    for name, side in (("height", height), ("width", width)):
        if side is not None and (not isinstance(side, int) or not 8 <= side <= MAX_SIDE or side % 8):
            raise UserError(f"{name}={side} (--{name}): use a multiple of 8 between 8 and {MAX_SIDE}{own}")
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise UserError(f"num_inference_steps={steps} (--steps): use a whole number from 1 to {MAX_STEPS} "
                        "(30 is typical)")
    if not isinstance(guidance, (int, float)) or not 0 <= guidance <= MAX_GUIDANCE:
        raise UserError(f"guidance_scale={guidance} (--guidance): use a number from 0 to {MAX_GUIDANCE:g} "
                        "(5 is typical)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size={batch_size} (--batch-size): use a whole number >= 1")


def _load_vae(vae: str | os.PathLike, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(str(vae), torch_dtype=dtype, use_safetensors=True).eval()
    except (OSError, ValueError) as err:
        raise UserError(f"--vae {vae}: could not load an AutoencoderKL ({err}); give a diffusers VAE directory "
                        "or a cached hub id such as madebyollin/sdxl-vae-fp16-fix") from None


def _tensor_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a mapper built in memory (no directory): its weights, in key order."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


__all__ = ["CoCoInsPipeline", "CoCoInsOutput", "Character", "CharacterLibrary"]
