r"""What defines a two-minima study: the landscape, the noise models, the budget, and its TOML form.

Why the two noise models have these parameters (theory.md §4, §5):

- ``isotropic`` ($\tau = 0.02$, $\sigma = 8$): the tilt makes nearly constant noise, $C \approx
  \sigma^2$, so the stationary law is the Gibbs law in $L$ and the textbook crossover appears
  (the deep sharp minimum wins at low $T$, the wide one at high $T$).
- ``translation`` ($\tau = 0.4$, $\sigma = 1.75$): the translations make $C \approx
  U''^2\tau^2$ in the sharp basin (57 % of its $C = 7.1$ at the sharp minimum), next to nothing
  in the wide one (2 % of 3.1), so the effective potential $\int L'/C$ departs from $L$: at
  $T = 0.04$–$0.065$ the Fokker–Planck law puts 0.95–0.90 of the mass in the wide basin, the
  Gibbs law in $L$ (whose deepest minimum is the sharp one, by 0.065) 0.56–0.61. With the tilt
  alone the law would be that Gibbs law; the translation part of the noise moves the mass.

  The tilt is not small on purpose: this is a mixed noise model. $C$ is smallest where $U''$
  changes sign, next to the barrier, where $L'$ is largest, so with little tilt the sharp
  basin's effective barrier is high and SGD never leaves it. The former model ($\tau = 0.3$,
  $\sigma = 1$) needs $4.6\cdot10^8$ steps per relaxation time at $T = 0.04$ and
  $1.3\cdot10^7$ at $T = 0.05$ ($B = 1$), and $\eta\lambda_{\max} \le 0.3$ caps $T$ at 0.052
  there ($\lambda_{\max} = 5.7$). With $\sigma = 1.75$ ($\lambda_{\max} = 4.3$) a relaxation
  time is 9400, 2600, 1650, 1100 and 790 steps at $T = 0.04, 0.05, 0.055, 0.06, 0.065$ and
  $B = 1$ ($\eta\lambda_{\max} = 0.17$–$0.28$), so SGD equilibrates in $10^4$–$10^5$ steps.
  (Figures for the default data, seed 0.)

Minibatches are drawn with replacement by default: i.i.d. minibatch noise of covariance $C/B$
is the regime the SDE and the Fokker–Planck law are derived for (theory.md §2.1–§2.2), so the
checks judge SGD there. Reshuffling every epoch (``replacement = false``) scales the marginal noise
by $(N-B)/(N-1)$, which the SDE, the law and the plan then use, but its within-epoch correlations
change the rare barrier crossings that set the basin masses: at isotropic $T = 0.005$, $B = 4$,
reshuffled SGD puts 0.238 of the mass in the wide basin, SGD with replacement 0.171, the law
0.154, which the factor moves by 0.0003 (full study, seed 0). The study shows this beside its
checks (``compare_sampling``), as a measurement, not a verdict.

Equilibration is planned, not hoped for: each cell runs ``relaxation_multiple`` predicted
relaxation times (:func:`~sgdtemp.theory.relaxation_time_1d`, at least ``min_steps``); a cell
that needs more than the budget ``n_steps`` is reported as such before anything runs, and not
simulated.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes import MixturePotential

__all__ = ["NoiseModelConfig", "TwoMinimaConfig", "load_config"]

NOISE_MODELS = ("isotropic", "translation")


@dataclass(frozen=True)
class NoiseModelConfig:
    r"""Data law of one noise model: $x \sim N(0, \tau^2)$, $\xi \sim N(0, \sigma^2)$.

    Attributes:
        translation_std: spread $\tau$ of the translations $x$.
        tilt_std: spread $\sigma$ of the tilts $\xi$.
        temperatures: the temperature grid $T = \eta/B$ for this noise model.
    """

    translation_std: float
    tilt_std: float
    temperatures: tuple[float, ...]


def _default_noise_models() -> dict[str, NoiseModelConfig]:
    return {
        # Tilt-dominated, near-constant noise C ~ tilt_std^2: the textbook crossover.
        "isotropic": NoiseModelConfig(
            translation_std=0.02,
            tilt_std=8.0,
            temperatures=(0.005, 0.01, 0.02, 0.04),
        ),
        # Translation-dominated stationary law, C ~ U''^2 Var(x) in the sharp basin; the tilt
        # keeps C up near the barrier so that SGD crosses it (see the module docstring).
        "translation": NoiseModelConfig(
            translation_std=0.4,
            tilt_std=1.75,
            temperatures=(0.04, 0.05, 0.055, 0.06, 0.065),
        ),
    }


@dataclass(frozen=True)
class TwoMinimaConfig:
    r"""Everything that defines a two-minima study (all defaults are the published defaults).

    Attributes:
        m: means of the two mixture components (minimum locations before translation).
        w: widths; the wide minimum is the component with the larger width.
        pi: mixture weights (sum to 1).
        noise_models: the noise models to run, by name.
        n_train: number of training pairs $(x_n, \xi_n)$.
        n_test: number of pairs in each test set.
        domain_shift: mean translation $\delta$ of the domain-shift test set.
        lr_scale: learning-rate scale $\eta_0$; each $T$ uses $B \in \{b, 2b\}$ with
            $b = \max(1, \mathrm{round}(\eta_0/T))$.
        n_chains: SGD / SDE chains per cell (half start in each basin).
        n_steps: step budget per cell. A cell whose planned run needs more is reported as
            unable to equilibrate within the budget and is not simulated.
        min_steps: steps of the shortest run.
        relaxation_multiple: a cell runs this many predicted relaxation times (at least
            ``min_steps`` steps); ``burn_in`` of them are discarded.
        record_every: keep every k-th iterate at least (runs long enough to keep more than
            2000 records per chain are thinned further).
        burn_in: fraction of the run discarded before averaging.
        equilibration_tol: chains started in either basin must agree within this, or within
            three standard errors of their difference where that is larger, to count as
            equilibrated.
        grid_points: points of the Fokker–Planck grid.
        replacement: draw each minibatch with replacement (i.i.d. examples: the noise $C/B$
            that the SDE and the Fokker–Planck law describe, the regime the checks are judged
            in). False reshuffles the examples every epoch; the SDE, the law and the plan then
            use the without-replacement factor $(N-B)/(N-1)$, and the checks judge SGD outside
            the regime its theory speaks about (each check's detail says so).
        compare_sampling: also run SGD with the other scheme in every simulated cell with
            $\eta\lambda_{\max} \le 0.3$ (where SGD follows its SDE), and report it beside the
            main run (``summary.json``'s ``sampling_comparison``); not a check.
        antithetic_tilts: draw the training tilts in $\pm$ pairs, so that their mean is exactly
            zero. The tilts still make real per-example gradient noise, but the train loss's
            depth gap is then the potential's own: an i.i.d. draw shifts it by
            $\bar\xi\,\Delta\theta \sim \sigma\Delta\theta/\sqrt N$, as large as the gap
            itself at the defaults, and would move the crossover with the seed. Test sets are
            always i.i.d., so sampling shift keeps its tilt component.
        seed: master seed (data and chains).
    """

    m: tuple[float, float] = (-1.0, 1.5)
    w: tuple[float, float] = (0.35, 1.2)
    pi: tuple[float, float] = (0.3, 0.7)
    noise_models: Mapping[str, NoiseModelConfig] = field(default_factory=_default_noise_models)
    n_train: int = 4096
    n_test: int = 4096
    domain_shift: float = 1.0
    lr_scale: float = 0.01
    n_chains: int = 2048
    n_steps: int = 400_000
    min_steps: int = 2000
    relaxation_multiple: float = 10.0
    record_every: int = 10
    burn_in: float = 0.5
    equilibration_tol: float = 0.03
    grid_points: int = 4001
    replacement: bool = True
    compare_sampling: bool = True
    antithetic_tilts: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate every field; raises UserError naming the key."""
        for key in (
            "n_train",
            "n_test",
            "n_chains",
            "n_steps",
            "min_steps",
            "record_every",
            "grid_points",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{key} must be a positive integer, got {value!r}")
        for key in ("replacement", "compare_sampling", "antithetic_tilts"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"{key} must be true or false, got {getattr(self, key)!r}")
        if self.n_chains < 2 or self.n_chains % 2:
            raise UserError(
                f"n_chains must be even and >= 2 (half start in each basin), got {self.n_chains}"
            )
        require_positive("lr_scale", self.lr_scale)
        require_positive("equilibration_tol", self.equilibration_tol)
        require_positive("relaxation_multiple", self.relaxation_multiple)
        if not 0.0 <= self.burn_in < 1.0:
            raise UserError(f"burn_in must lie in [0, 1), got {self.burn_in}")
        if self.min_steps * (1.0 - self.burn_in) < 2 * self.record_every:
            raise UserError("min_steps is too short: fewer than 2 records remain after burn_in")
        if self.min_steps > self.n_steps:
            raise UserError(
                f"min_steps ({self.min_steps}) exceeds the step budget n_steps ({self.n_steps})"
            )
        if not self.noise_models:
            raise UserError("noise_models is empty: give at least one of isotropic, translation")
        for name, nm in self.noise_models.items():
            if name not in NOISE_MODELS:
                raise UserError(f"unknown noise model {name!r}; use 'isotropic' or 'translation'")
            if nm.translation_std < 0 or nm.tilt_std < 0:
                raise UserError(f"noise_models.{name}: translation_std and tilt_std must be >= 0")
            if not nm.temperatures:
                raise UserError(f"noise_models.{name}.temperatures is empty")
            for t in nm.temperatures:
                require_positive(f"noise_models.{name}.temperatures", t)
        MixturePotential(m=self.m, w=self.w, pi=self.pi)  # validates m, w, pi

    def batch_sizes(self, temp: float) -> tuple[int, int]:
        """The iso-T pair of batch sizes used for temperature ``temp``.

        Example:
            >>> TwoMinimaConfig().batch_sizes(0.002)
            (5, 10)
        """
        b = max(1, round(self.lr_scale / temp))
        if 2 * b > self.n_train:
            raise UserError(
                f"temperature {temp} needs batch size {2 * b} > n_train={self.n_train}; "
                "raise the temperature or lower lr_scale"
            )
        return b, 2 * b

    @classmethod
    def quick(cls) -> TwoMinimaConfig:
        """A reduced study for a demonstration (well under 2 minutes on 2 cores).

        Fewer chains and a budget of 30 000 steps per cell: the cells that need longer (the
        lowest temperature of each noise model) are reported, not simulated.
        """
        return dataclasses.replace(cls(), n_chains=512, n_steps=30_000, grid_points=2001)


def load_config(path: Path, *, quick: bool = False) -> TwoMinimaConfig:
    """Read a TOML config; unknown keys and bad values raise UserError naming file and key.

    The file holds any of :class:`TwoMinimaConfig`'s fields at top level and one table per noise
    model under ``[noise_models.NAME]``; fields not given keep their defaults (quick or full).
    """
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise UserError(f"config file {path} does not exist") from err
    except OSError as err:
        raise UserError(f"config file {path} cannot be read ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config file {path} is not valid TOML: {err}") from err
    base = TwoMinimaConfig.quick() if quick else TwoMinimaConfig()
    fields = {f.name for f in dataclasses.fields(TwoMinimaConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise UserError(
            f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "noise_models":
            kwargs[key] = _parse_noise_models(path, value, base.noise_models)
        elif key in ("m", "w", "pi"):
            if not (isinstance(value, list) and len(value) == 2):
                raise UserError(f"{path}: key {key!r} must be a list of two numbers")
            kwargs[key] = (float(value[0]), float(value[1]))
        else:
            expected = type(getattr(base, key))
            if expected is float and isinstance(value, int):
                value = float(value)
            if not isinstance(value, expected) or (
                isinstance(value, bool) and expected is not bool
            ):
                raise UserError(f"{path}: key {key!r} must be a {expected.__name__}, got {value!r}")
            kwargs[key] = value
    try:
        return dataclasses.replace(base, **kwargs)
    except UserError as err:
        raise UserError(f"{path}: {err}") from err


def _parse_noise_models(
    path: Path, raw: Any, defaults: Mapping[str, NoiseModelConfig]
) -> dict[str, NoiseModelConfig]:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: noise_models must be a table of [noise_models.NAME] tables")
    out = {}
    keys = {f.name for f in dataclasses.fields(NoiseModelConfig)}
    for name, table in raw.items():
        if name not in NOISE_MODELS:
            raise UserError(f"{path}: unknown noise model {name!r}; use isotropic or translation")
        if not isinstance(table, dict):
            raise UserError(f"{path}: noise_models.{name} must be a table")
        bad = sorted(set(table) - keys)
        if bad:
            raise UserError(
                f"{path}: unknown key noise_models.{name}.{bad[0]}; valid: {sorted(keys)}"
            )
        base = defaults.get(name, _default_noise_models()[name])
        try:
            out[name] = NoiseModelConfig(
                translation_std=float(table.get("translation_std", base.translation_std)),
                tilt_std=float(table.get("tilt_std", base.tilt_std)),
                temperatures=tuple(float(t) for t in table.get("temperatures", base.temperatures)),
            )
        except (TypeError, ValueError) as err:
            raise UserError(f"{path}: noise_models.{name}: values must be numbers ({err})") from err
    return out


def config_dict(config: TwoMinimaConfig) -> dict[str, Any]:
    """The config as JSON-ready nested dicts (as stored in ``summary.json``)."""
    out = dataclasses.asdict(config)
    out["noise_models"] = {k: dataclasses.asdict(v) for k, v in config.noise_models.items()}
    return out
