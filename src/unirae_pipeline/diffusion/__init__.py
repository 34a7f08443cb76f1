"""Pure torch flow matching: time shift, time distributions, samplers and guidance."""

from .sampling import SamplerConfig, guided_velocity, sample_ode, time_grid
from .transport import TransportConfig, flow_matching_loss, sample_time, shift_factor, shift_time

__all__ = ["SamplerConfig", "TransportConfig", "flow_matching_loss", "guided_velocity", "sample_ode",
           "sample_time", "shift_factor", "shift_time", "time_grid"]
