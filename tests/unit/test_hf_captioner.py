"""The transformers captioner's configuration, checked before any model loads: a local
model folder that is not there fails validation. The captioner itself, with tiny
random-weight models, is in ``tests/integration/test_hf_captioner.py``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from annotators.hf_captioner import HFCaptioner


def test_missing_local_folder_fails_validation(tmp_path):
    with pytest.raises(ValidationError) as error:
        HFCaptioner(model=str(tmp_path / "no-such-model"))
    assert error.value.errors()[0]["loc"] == ("model",)
    assert "model folder not found" in str(error.value)
    with pytest.raises(ValidationError, match="model folder not found"):
        HFCaptioner(model="./no-such-model")
    # a file is not a model folder either
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValidationError, match="model folder not found"):
        HFCaptioner(model=str(tmp_path / "weights.bin"))
