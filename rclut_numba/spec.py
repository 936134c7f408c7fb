"""ModelSpec: the one description of a LUT super-resolution model.

SR-LUT, MuLUT-SDY-X2, RC-LUT and RC on SR-LUT/MuLUT are all instances of the same
structure: a scale, a sampling interval and a list of cascaded stages, each stage a list of
branches.  A branch optionally starts with an RC window (N x N, N odd) and then reads an input
pattern: four pixels (S, D or Y, a 4D LUT, interpolated) or one pixel ("1", a 1D LUT with 256
exact entries).  Every stage but the last has one output per branch; the last has scale**2.

The arithmetic every implementation shares (engine, slow reference, torch LUT forward):

* Orientation ensemble: each branch is evaluated on the 4 quarter-turn rotations of its input
  (``numpy.rot90(x, r)``), or with ``orientations = 8`` also on those of its transpose
  (``numpy.rot90(x.T, r)``, the other half of the square's symmetry group); patterns read
  bottom/right with edge replication in that frame, and each result is turned back.
* A 4D LUT lookup is 4-simplex interpolation with integer weights summing to ``interval``;
  a 1D LUT lookup is the exact entry times ``interval`` (same units).
* All weighted entries of a stage (branches x orientations) are summed exactly into ``acc``.
* Between stages: ``x = round(clip(acc / (interval * O * branches) + 127, 0, 255))``, O the
  number of orientations (4 or 8).
* Last stage: ``y = round(clip(acc / (interval * O/4 * branches) + base, 0, 255))``, where ``base``
  is 0, or in a *residual* model the model's input pixel the output block belongs to (its
  anchor): the tables then hold a correction to nearest-neighbour upscaling, and a flat image
  stays flat whatever codes its levels give the last stage, as long as the tables say ~0.
* ``round`` is round-half-to-even of the exact rational value.
* An RC window turns its N*N pixels into ``q = #{k : sum_p table[p, pixel_p] >= thr[k]}``
  (int16 tables, 255 sorted int32 thresholds, so q is 0..255; a bundle may store the tables
  packed, see ``rc_storage``); the pattern then reads q
  exactly as it would read the image.  Table row ``p = N*i + j`` is the pixel at offset
  ``(i - N//2, j - N//2)`` from the centre, in the rotated frame; the window is edge-padded.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# 2: RC tables may be stored packed (rc_storage); 3: the "residual" key; 4: the "orientations"
# key.  A four-orientation spec is still written as version 3, so older readers run it.
FORMAT_VERSION = 4
FOUR_ORIENTATION_VERSION = 3
READABLE_VERSIONS = (1, 2, 3, 4)
ORIENTATIONS = (4, 8)  # the rotations, or the rotations of the image and of its transpose

# (row, col) offsets of the pattern pixels from the anchor, in the (rotated) image frame.
PATTERN_OFFSETS: dict[str, tuple[tuple[int, int], ...]] = {
    "S": ((0, 0), (0, 1), (1, 0), (1, 1)),
    "D": ((0, 0), (0, 2), (2, 0), (2, 2)),
    "Y": ((0, 0), (1, 1), (1, 2), (2, 1)),
    "1": ((0, 0),),
}
ALLOWED_INTERVALS = (4, 8, 16, 32, 64, 128)
MAX_RC_WINDOW = 15
MAX_STAGES = 16  # far beyond any published layout; bounds what a stranger's spec can ask for
MAX_BRANCHES = 64
MAX_NAME_LENGTH = 200
SPEC_KEYS = ("format_version", "name", "scale", "interval", "stages", "residual", "orientations",
             "extra")


class SpecError(ValueError):
    """A model description that cannot be run; the message says what is wrong."""


@dataclass(frozen=True)
class Branch:
    pattern: str
    rc: int = 0  # RC window size N (odd); 0 = the pattern reads the stage input directly

    def __post_init__(self):
        if not isinstance(self.pattern, str):
            raise SpecError(f"pattern must be a string (one of {', '.join(PATTERN_OFFSETS)}), "
                            f"got {type(self.pattern).__name__} {_short(self.pattern)}")
        if self.pattern not in PATTERN_OFFSETS:
            raise SpecError(f"unknown pattern {_short(self.pattern)}; expected one of "
                            f"{', '.join(PATTERN_OFFSETS)}")
        if not _is_int(self.rc):
            raise SpecError(f"rc must be an integer, got {_short(self.rc)}")
        if self.rc and (self.rc < 1 or self.rc % 2 == 0 or self.rc > MAX_RC_WINDOW):
            raise SpecError(f"rc window must be an odd size 1..{MAX_RC_WINDOW} (or 0 for none), "
                            f"got {self.rc}")

    @property
    def n_inputs(self) -> int:
        return len(PATTERN_OFFSETS[self.pattern])

    @property
    def extent(self) -> int:
        """How many pixels past the anchor (in any direction, over rotations) the branch reads."""
        return max(max(abs(a), abs(b)) for a, b in PATTERN_OFFSETS[self.pattern]) + self.rc // 2

    def label(self) -> str:
        return (f"rc{self.rc}-" if self.rc else "") + self.pattern


@dataclass(frozen=True)
class Stage:
    branches: tuple[Branch, ...]

    def __post_init__(self):
        if not self.branches:
            raise SpecError("a stage needs at least one branch")
        if len(self.branches) > MAX_BRANCHES:
            raise SpecError(f"a stage has at most {MAX_BRANCHES} branches, "
                            f"got {len(self.branches)}")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    scale: int
    stages: tuple[Stage, ...]
    interval: int = 16
    residual: bool = False  # the last stage adds its output block's input pixel (module doc)
    orientations: int = 4   # 4 rotations, or 8: also those of the transposed input (module doc)
    extra: dict = field(default_factory=dict, compare=False)  # free-form notes, kept in the bundle

    def __post_init__(self):
        # Types are checked, not coerced: 16.0 == 16 in Python, but a float interval would
        # reach the numba kernels as a float and fail there.
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME_LENGTH:
            raise SpecError(f"name must be a string of at most {MAX_NAME_LENGTH} characters, "
                            f"got {type(self.name).__name__} {_short(self.name)}")
        if not _is_int(self.scale) or not 1 <= self.scale <= 8:
            raise SpecError(f"scale must be an integer 1..8, got {_short(self.scale)}")
        if not _is_int(self.interval) or self.interval not in ALLOWED_INTERVALS:
            raise SpecError(f"interval must be an integer, one of {ALLOWED_INTERVALS}, "
                            f"got {_short(self.interval)}")
        if not isinstance(self.stages, tuple) or not all(isinstance(st, Stage)
                                                         for st in self.stages):
            raise SpecError("stages must be a tuple of Stage")
        if not self.stages:
            raise SpecError("a model needs at least one stage")
        if len(self.stages) > MAX_STAGES:
            raise SpecError(f"a model has at most {MAX_STAGES} stages, got {len(self.stages)}")
        if not isinstance(self.residual, bool):
            raise SpecError(f"residual must be true or false, got {_short(self.residual)}")
        if not _is_int(self.orientations) or self.orientations not in ORIENTATIONS:
            raise SpecError(f"orientations must be 4 or 8, got {_short(self.orientations)}")
        if not isinstance(self.extra, dict):
            raise SpecError(f"extra must be a dict, got {type(self.extra).__name__}")

    # ---- derived quantities -------------------------------------------------------------
    @property
    def levels(self) -> int:
        """Sample points per 4D LUT input: 0, interval, ..., 256 - interval, and 255."""
        return 256 // self.interval + 1

    def n_outputs(self, stage_index: int) -> int:
        return self.scale ** 2 if stage_index == len(self.stages) - 1 else 1

    def stage_rescale(self, stage_index: int, interpolated: bool = True) -> tuple[int, int]:
        """``(divisor, bias)`` that turn a stage's sum into its output.

        The output is ``round(clip(acc / divisor + bias, 0, 255))``, where ``acc`` sums the
        stage's table entries over branches and orientations. Between stages the sum is
        averaged over branches and orientations and re-centred on 127; the last stage averages
        over branches and pairs of rotation sets (its tables add up over four rotations),
        without a bias (a residual model adds its input pixel there instead: ``base`` in
        the module doc, not part of this pair). With ``interpolated`` (tables read by 4-simplex
        interpolation, whose weights sum to ``interval``) ``acc`` carries a factor ``interval``
        that the divisor includes; a network's sum (``interpolated=False``) does not.
        """
        n = len(self.stages[stage_index].branches)
        last = stage_index == len(self.stages) - 1
        # the last stage's tables are in units of a quarter of the output (four rotations sum)
        divisor = n * self.orientations // 4 if last else self.orientations * n
        return (divisor * self.interval if interpolated else divisor), (0 if last else 127)

    def adds_input(self, stage_index: int) -> bool:
        """Whether stage ``stage_index`` adds the model's input pixel (``base`` in the module
        doc): the last stage of a residual model."""
        return self.residual and stage_index == len(self.stages) - 1

    @property
    def margin(self) -> int:
        """Low-resolution pixels on each side that can influence a pixel (tiling overlap)."""
        return sum(max(b.extent for b in st.branches) for st in self.stages)

    def branches(self):
        """(stage_index, branch_index, branch) for every branch, in order."""
        for si, st in enumerate(self.stages):
            for bi, br in enumerate(st.branches):
                yield si, bi, br

    def lut_rows(self, branch: Branch) -> int:
        return self.levels ** 4 if branch.n_inputs == 4 else 256

    def expected_arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every array a bundle of this spec holds: name -> (shape, dtype)."""
        out = {}
        for si, bi, br in self.branches():
            key = array_key(si, bi)
            out[f"{key}_lut"] = ((self.lut_rows(br), self.n_outputs(si)), "int8")
            if br.rc:
                out[f"{key}_rc_table"] = ((br.rc * br.rc, 256), "int16")
                out[f"{key}_rc_thresholds"] = ((255,), "int32")
        return out

    def describe(self) -> str:
        stages = " | ".join(", ".join(b.label() for b in st.branches) for st in self.stages)
        residual = ", residual" if self.residual else ""
        orient = ", 8 orientations" if self.orientations == 8 else ""
        return (f"{self.name}: x{self.scale}, interval {self.interval}{residual}{orient}, "
                f"stages [{stages}]")

    # ---- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict:
        out = {
            "format_version": FOUR_ORIENTATION_VERSION,
            "name": self.name,
            "scale": self.scale,
            "interval": self.interval,
            "stages": [[{"pattern": b.pattern, "rc": b.rc} for b in st.branches]
                       for st in self.stages],
            "residual": self.residual,
            "extra": self.extra,
        }
        if self.orientations != 4:
            out.update(format_version=FORMAT_VERSION, orientations=self.orientations)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d) -> ModelSpec:
        if not isinstance(d, dict):
            raise SpecError("spec must be a JSON object")
        unknown = sorted(str(k) for k in set(d) - set(SPEC_KEYS))
        if unknown:
            raise SpecError(f"spec has unknown key {_short(unknown[0])} (expected "
                            f"{', '.join(SPEC_KEYS)})")
        version = d.get("format_version", FORMAT_VERSION)
        if not _is_int(version) or version not in READABLE_VERSIONS:
            raise SpecError(f"spec format_version {_short(version)} is not supported "
                            f"(this rclut_numba reads versions {READABLE_VERSIONS[0]} to "
                            f"{READABLE_VERSIONS[-1]})")
        for key in ("name", "scale", "stages"):
            if key not in d:
                raise SpecError(f"spec is missing {key!r}")
        stages_raw = d["stages"]
        if not isinstance(stages_raw, list):
            raise SpecError("spec 'stages' must be a list of lists of branches")
        if len(stages_raw) > MAX_STAGES:
            raise SpecError(f"a model has at most {MAX_STAGES} stages, got {len(stages_raw)}")
        stages = []
        for si, st in enumerate(stages_raw):
            if not isinstance(st, list):
                raise SpecError(f"stage {si} must be a list of branches")
            if len(st) > MAX_BRANCHES:
                raise SpecError(f"stage {si}: a stage has at most {MAX_BRANCHES} branches, "
                                f"got {len(st)}")
            branches = []
            for bi, b in enumerate(st):
                if isinstance(b, str):  # shorthand: "S", or "rc5-S"
                    b = _parse_branch_label(b)
                if not isinstance(b, dict) or "pattern" not in b:
                    raise SpecError(f"stage {si} branch {bi}: expected "
                                    "{'pattern': ..., 'rc': ...}")
                unknown = sorted(str(k) for k in set(b) - {"pattern", "rc"})
                if unknown:
                    raise SpecError(f"stage {si} branch {bi}: unknown keys {_short(unknown)}")
                try:
                    branches.append(Branch(pattern=b["pattern"], rc=b.get("rc", 0)))
                except SpecError as e:
                    raise SpecError(f"stage {si} branch {bi}: {e}") from None
            stages.append(Stage(tuple(branches)))
        extra = d.get("extra", {})
        if not isinstance(extra, dict):
            raise SpecError("spec 'extra' must be an object")
        if d.get("residual", False) is True and version < 3:
            raise SpecError(f"spec format_version {version} has no residual models (3 has)")
        if "orientations" in d and version < 4:
            raise SpecError(f"spec format_version {version} has no 'orientations' (4 has)")
        return cls(name=d["name"], scale=d["scale"], interval=d.get("interval", 16),
                   stages=tuple(stages), residual=d.get("residual", False),
                   orientations=d.get("orientations", 4), extra=extra)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec is not valid JSON: {e}") from None
        return cls.from_dict(d)

    @classmethod
    def from_toml(cls, path) -> ModelSpec:
        """Read the ``[model]`` table of a config file (training/configs/*.toml)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError(f"cannot read config {path}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"config {path} is not valid TOML: {e}") from None
        if "model" not in data:
            raise SpecError(f"config {path} has no [model] table")
        return cls.from_dict(data["model"])


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(v, limit: int = 40) -> str:
    """``repr(v)`` cut to ``limit`` characters: a stranger's spec may hold anything."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def array_key(stage_index: int, branch_index: int) -> str:
    return f"s{stage_index + 1}_b{branch_index + 1}"


def _parse_branch_label(label: str) -> dict:
    rc = 0
    if label.startswith("rc"):
        head, _, label = label.partition("-")
        try:
            rc = int(head[2:])
        except ValueError:
            raise SpecError(f"bad branch label {head!r}-{label!r}; expected e.g. 'rc5-S'") from None
    return {"pattern": label, "rc": rc}


# ---- the families the project knows by name -------------------------------------------
def srlut(scale: int = 4) -> ModelSpec:
    return ModelSpec("SR-LUT", scale, (Stage((Branch("S"),)),))


def mulut_sdy_x2(scale: int = 4) -> ModelSpec:
    sdy = tuple(Branch(p) for p in "SDY")
    return ModelSpec("MuLUT-SDY-X2", scale, (Stage(sdy), Stage(sdy)))


def rclut_paper(scale: int = 4) -> ModelSpec:
    """RC-LUT as laid out in the ICCV 2023 paper."""
    stage1 = Stage((Branch("S", 3), Branch("S", 5), Branch("S", 7)))
    stage2 = Stage((Branch("1", 3), Branch("S", 5), Branch("1", 7)))
    return ModelSpec("RC-LUT", scale, (stage1, stage2))
