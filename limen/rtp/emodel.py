"""Estimated call quality: a simplified ITU-T G.107 E-model (R factor → MOS).

G.107 §7 computes R = Ro - Is - Id - Ie,eff + A. With every parameter at its default value
Ro - Is = 93.2 (the often quoted figure for the default ~93.19), and A = 0 (no advantage for
wired phones), so:

    R = 93.2 - Id(d) - Ie,eff(codec, Ppl)

Simplifications, stated:

- Delay: Id from the well-known fit of G.107's Idd/Idte for echo-free connections (Cole &
  Rosenbluth, "Voice over IP performance monitoring", 2001):
  Id = 0.024*d + 0.11*(d - 177.3)*H(d - 177.3), d the one-way mouth-to-ear delay in ms.
  The caller estimates d; for a relay a reasonable figure is RTT/2 + jitter buffer
  (about 2 x jitter) + packetisation (ptime).
- Loss (G.107 §7.6, equation 7-29): Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl/BurstR + Bpl),
  Ppl in percent, BurstR = 1 for random loss.
- Ie and Bpl per codec from ITU-T G.113 Appendix I. Wideband codecs (G.722, Opus) are put
  on the narrowband scale with G.711's values (G.107.1's wideband scale is not used), and an
  unknown codec is treated as G.711: the estimate then reflects the network, not the codec.
- MOS from R (G.107 Annex B): 1 below R = 0, 4.5 above 100, else
  1 + 0.035R + R(R - 60)(100 - R)*7*10⁻⁶, clamped to at least 1 (the cubic dips a hair
  below 1 for small R). G.711, no loss, low delay: R ≈ 93.2, MOS ≈ 4.41.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

R_DEFAULT: Final = 93.2


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """Equipment impairment Ie and packet-loss robustness Bpl (G.113 Appendix I)."""

    ie: float
    bpl: float


_G711: Final = CodecImpairment(0.0, 25.1)  # with packet loss concealment (G.711 Appendix I)

CODEC_IMPAIRMENTS: Final[dict[str, CodecImpairment]] = {
    "PCMU": _G711,
    "PCMA": _G711,
    "G722": _G711,
    "OPUS": _G711,
    "G729": CodecImpairment(11.0, 19.0),  # G.729A + VAD
    "G723": CodecImpairment(15.0, 16.1),  # G.723.1 6.3 kbit/s + VAD
    "GSM-EFR": CodecImpairment(5.0, 10.0),
}


def codec_impairment(codec: str) -> CodecImpairment:
    """Ie/Bpl for an encoding name (case-insensitive); G.711's for unknown codecs."""
    return CODEC_IMPAIRMENTS.get(codec.upper(), _G711)


def delay_impairment(delay_ms: float) -> float:
    """Id for a one-way delay in milliseconds (simplified, see the module docstring)."""
    delay = max(0.0, delay_ms)
    impairment = 0.024 * delay
    if delay > 177.3:
        impairment += 0.11 * (delay - 177.3)
    return impairment


def effective_equipment_impairment(
    codec: str, loss_percent: float, burst_ratio: float = 1.0
) -> float:
    """Ie,eff (G.107 equation 7-29) for a codec at a packet loss percentage."""
    params = codec_impairment(codec)
    loss = min(100.0, max(0.0, loss_percent))
    if loss == 0.0:
        return params.ie
    return params.ie + (95.0 - params.ie) * loss / (loss / burst_ratio + params.bpl)


def r_factor(
    codec: str, loss_percent: float = 0.0, delay_ms: float = 0.0, burst_ratio: float = 1.0
) -> float:
    """R = 93.2 - Id - Ie,eff."""
    return (
        R_DEFAULT
        - delay_impairment(delay_ms)
        - effective_equipment_impairment(codec, loss_percent, burst_ratio)
    )


def mos_from_r(r: float) -> float:
    """Estimated MOS-CQE from R (G.107 Annex B, equation B-4), in [1, 4.5]."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


def estimate_mos(
    codec: str, loss_percent: float = 0.0, delay_ms: float = 0.0, burst_ratio: float = 1.0
) -> float:
    """MOS estimate for a stream: codec name, loss in percent, one-way delay in ms."""
    return mos_from_r(r_factor(codec, loss_percent, delay_ms, burst_ratio))
