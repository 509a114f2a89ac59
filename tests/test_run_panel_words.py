"""The Train page's line for a stopped run says what Resume does once."""

from glandseg_dashboard.run_panel import _stopped_words


def test_a_stop_in_tuning_says_what_resume_does_once() -> None:
    words = _stopped_words(
        {
            "message": "stopped while tuning post-processing",
            "resume": "continues the tuning from the grid points scored",
            "has_last": True,
        }
    )
    assert words == (
        "Stopped: stopped while tuning post-processing. Resume continues the tuning from the grid points scored."
    )


def test_a_stop_in_an_epoch_points_at_last_pt_or_a_restart() -> None:
    assert _stopped_words({"message": "stopped by the user", "has_last": True}) == (
        "Stopped: stopped by the user. Resume continues from the last finished epoch (last.pt)."
    )
    assert _stopped_words({"message": "", "has_last": False}) == (
        "Stopped. No epoch had finished: Restart trains it from the start."
    )
    first = {"message": "stopped during epoch 1", "resume": "repeats that epoch", "has_last": False}
    assert _stopped_words(first) == (
        "Stopped: stopped during epoch 1. No epoch had finished: Restart trains it from the start."
    )
