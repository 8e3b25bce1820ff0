"""``actions.yaml``: what can be done for a segment, and who is held out.

Declared in ``$SEG_DATA_DIR/actions.yaml`` (or the file ``$SEG_ACTIONS_FILE`` names), like sources.yaml:

```yaml
control:
  share: 0.05          # global control group: never receives an action
  salt: "2026-12"      # changing it re-draws the group (recorded in meta.control_salts with the date)
holdout_share: 0.10    # per campaign, on top of the global control (0: campaigns hold out nobody)
campaigns:             # optional: campaigns that planned another holdout share (a 50/50 test), by campaign id as
  spring_test: {holdout_share: 0.5}   # the sends name it (an audience file's campaign is <action_id>-<yyyymmdd>)
attribution_days: 7    # an order within this many days after a send is its outcome
actions:
  winback_10:
    description: 10 % off the next order
    channel: email
    cost_per_send: 0.02
    eligible_segments: [Dormant, At risk]   # segment names or ids; absent: every segment
    eligible_stages: [at risk, dormant]     # lifecycle stages; absent: every stage
```

Without a file there are no actions and a 5 % global control group with salt ``seg-assets``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seg_assets.config_files import FILES, SAFE_NAME, SAFE_NAME_RULE, ConfigError, load_model
from seg_assets.segmentation.rule_based import LIFECYCLE_STAGES

ACTIONS_FILE = "actions.yaml"
ACTIONS_ENV = FILES[ACTIONS_FILE]


class ActionsConfigError(ConfigError):
    """An actions file that cannot be used; one line naming the key and what to fix."""


class Control(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    share: float = Field(default=0.05, ge=0, le=0.5, description="Share of users in the global control group.")
    salt: str = Field(default="seg-assets", min_length=1, description="Hash salt: a new salt re-draws the group.")


HoldoutShare = Annotated[float, Field(ge=0, le=0.5, description="Share of a campaign's users held out (control).")]


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    description: str = ""
    channel: str = "email"
    cost_per_send: float = Field(default=0.0, ge=0)
    eligible_segments: list[str | int] = Field(default_factory=list)
    eligible_stages: list[str] = Field(default_factory=list)

    @field_validator("cost_per_send", mode="before")
    @classmethod
    def _a_number(cls, cost):
        """YAML's ``true`` was read as a cost of 1.0 (a tester's)."""
        if isinstance(cost, bool):
            raise ValueError(f"cost_per_send is a number, not {str(cost).lower()}")
        return cost

    @field_validator("eligible_segments", mode="before")
    @classmethod
    def _no_flags(cls, segments):
        """YAML reads ``on``/``no`` as booleans, which would count as segment ids 1 and 0."""
        flags = [s for s in segments or [] if isinstance(s, bool)] if isinstance(segments, list) else []
        if flags:
            raise ValueError(f"a segment YAML read as {flags[0]!r} (yes/no/on/off): quote the name or give the id")
        return segments

    @field_validator("eligible_stages")
    @classmethod
    def _known_stages(cls, stages: list[str]) -> list[str]:
        """Stages are a closed set: a misspelt one ("at_risk", "vip") made the action eligible for nobody, in silence."""
        unknown = [s for s in stages if s.strip().lower() not in LIFECYCLE_STAGES]
        if unknown:
            raise ValueError(f"unknown lifecycle stage {unknown[0][:40]!r}: use {', '.join(LIFECYCLE_STAGES)}")
        return stages

    def eligible(self, segment_id: int, segment_name: str, lifecycle_stage: str | None) -> bool:
        segments = {str(s).strip().lower() for s in self.eligible_segments}
        stages = {s.strip().lower() for s in self.eligible_stages}
        in_segment = not segments or str(segment_id) in segments or segment_name.strip().lower() in segments
        in_stage = not stages or (lifecycle_stage or "").strip().lower() in stages
        return in_segment and in_stage


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    holdout_share: HoldoutShare


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    control: Control = Field(default_factory=Control)
    holdout_share: HoldoutShare = 0.10
    campaigns: dict[str, Campaign] = Field(default_factory=dict)
    attribution_days: int = Field(default=7, ge=1, le=365)
    actions: dict[str, Action] = Field(default_factory=dict)

    @field_validator("campaigns")
    @classmethod
    def _trimmed(cls, campaigns: dict[str, Campaign]) -> dict[str, Campaign]:
        """Campaign ids as ingestion stores them (trimmed): a key ``" spring "`` matched no campaign."""
        trimmed = {key.strip(): plan for key, plan in campaigns.items()}
        if len(trimmed) < len(campaigns):
            raise ValueError("two keys name one campaign once trimmed (campaign ids are stored without surrounding spaces)")
        return trimmed

    def holdout_of(self, campaign_id: str) -> float:
        """The holdout share the campaign planned: its own in ``campaigns``, else ``holdout_share``."""
        plan = self.campaigns.get(campaign_id)
        return self.holdout_share if plan is None else plan.holdout_share

    @field_validator("actions")
    @classmethod
    def _ids_are_file_names(cls, actions: dict[str, Action]) -> dict[str, Action]:
        """An action id names its audience files (bi/audiences/<id>-<yyyymmdd>.csv): never a path."""
        seen: dict[str, str] = {}
        for action_id in actions:
            if not SAFE_NAME.fullmatch(action_id):
                raise ValueError(f"action id {action_id[:80]!r} must use {SAFE_NAME_RULE} (it names audience files)")
            if (other := seen.setdefault(action_id.lower(), action_id)) != action_id:  # Promo-*.csv and promo-*.csv:
                raise ValueError(f"action ids {other!r} and {action_id!r} differ only in case: their audience files "
                                 "would be one file on a case-insensitive file system (a CRM's share); rename one")
        return actions


def load_catalogue(data_root) -> Catalogue:
    return load_model(data_root, ACTIONS_FILE, ACTIONS_ENV, Catalogue, ActionsConfigError)
