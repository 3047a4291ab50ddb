"""Custom socket types shared by the pack's nodes."""
from comfy_api.latest import io

DragonInversionType = io.Custom("DRAGON_INVERSION")
DragonGuidanceType = io.Custom("DRAGON_GUIDANCE")
DragonPointsType = io.Custom("DRAGON_POINTS")

CATEGORY = "DragonDiffusion"
