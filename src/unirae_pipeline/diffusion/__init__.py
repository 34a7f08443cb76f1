"""Pure torch flow matching: time shift, time distributions, samplers and guidance."""

from .sampling import (
    SamplerConfig,
    autoguided_velocity,
    guided_velocity,
    integrate,
    module_velocity,
    sample_ode,
    sample_sde,
    time_grid,
)
from .transport import TransportConfig, VelocityFn, flow_matching_loss, sample_time, shift_factor, shift_time

__all__ = ["SamplerConfig", "TransportConfig", "VelocityFn", "autoguided_velocity", "flow_matching_loss",
           "guided_velocity", "integrate", "module_velocity", "sample_ode", "sample_sde", "sample_time",
           "shift_factor", "shift_time", "time_grid"]
