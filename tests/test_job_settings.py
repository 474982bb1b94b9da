"""The one manifest-value reader: dotted keys, defaults, and refusals that name the key."""

import pytest

from job_settings import JobInputError, JobSettingError, JobSettings, lookup, parse_flag

JOB = {"epochs": 20, "batch_size": "8", "learning_rate": "1e-4",
       "model": {"from_scratch": "yes", "language": " am ", "preset": None},
       "inference": {"diffusion_steps": 12.0, "audio_format": "WebM"}}


def test_dotted_lookup_and_defaults():
    settings = JobSettings(JOB)
    assert lookup(JOB, "inference.diffusion_steps") == 12.0
    assert lookup(JOB, "model.preset", "v1.1") == "v1.1"      # null takes the default
    assert lookup(JOB, "epochs.nested", 3) == 3               # a number has no children
    assert settings.integer("epochs", 100) == 20
    assert settings.integer("batch_size", 4) == 8             # a string that is a whole number
    assert settings.integer("inference.diffusion_steps", 10) == 12
    assert settings.number("learning_rate") == pytest.approx(1e-4)
    assert settings.number("warmup_steps", 5.0) == 5.0
    assert settings.flag("model.from_scratch", False) is True
    assert settings.flag("inference.replace_recorded", False) is False
    assert settings.text("model.language") == "am"
    assert settings.text("inference.audio_format", lower=True, choices=("webm", "wav")) == "webm"
    assert settings.has("epochs") and not settings.has("model.preset")


@pytest.mark.parametrize("job, call, named", [
    ({"epochs": "many"}, lambda s: s.integer("epochs", 1), "'epochs' must be a whole number, not 'many'"),
    ({"epochs": 2.5}, lambda s: s.integer("epochs", 1), "'epochs' must be a whole number"),
    ({"epochs": True}, lambda s: s.integer("epochs", 1), "'epochs' must be a whole number, not True"),
    ({"seed": float("nan")}, lambda s: s.number("seed"), "'seed' must be a number"),
    ({"inference": {"steps": 0}}, lambda s: s.integer("inference.steps", 1, minimum=1, maximum=1000),
     "'inference.steps' must be between 1 and 1000, not 0"),
    ({"val_split": -1}, lambda s: s.number("val_split", minimum=0), "'val_split' must be at least 0"),
    ({"model": {"from_scratch": "perhaps"}}, lambda s: s.flag("model.from_scratch", False),
     "'model.from_scratch' must be true or false, not 'perhaps'"),
    ({"inference": {"audio_format": "mp9"}}, lambda s: s.text("inference.audio_format", choices=("webm", "wav")),
     "'inference.audio_format' must be one of webm, wav, not 'mp9'"),
    ({"model": {"language": ["am"]}}, lambda s: s.text("model.language"), "'model.language' must be text"),
])
def test_unusable_values_name_the_key(job, call, named):
    with pytest.raises(JobSettingError, match=named.replace("(", r"\(")):
        call(JobSettings(job))


def test_flags_accept_what_people_write():
    assert [parse_flag(v, "k") for v in (True, "TRUE", " no ", "1", False)] == [True, True, False, True, False]
    with pytest.raises(JobSettingError, match="'k' must be true or false"):
        parse_flag(1, "k")
    assert issubclass(JobSettingError, JobInputError) and issubclass(JobInputError, ValueError)
