"""Stopping promptly on SIGTERM. Lightning catches the signal (so the process is not killed) and checks it only
at batch ends; a batch of sampling or evaluation is many images, each many denoising steps, so a terminated run
went on for minutes. These checks stop it within one denoising step; files already written are whole (atomic)."""

from __future__ import annotations

from lightning.pytorch.utilities.exceptions import SIGTERMException


def stop_if_terminated(trainer) -> None:
    if trainer is not None and getattr(trainer, "received_sigterm", False):
        raise SIGTERMException("received SIGTERM: stopped; images written so far are complete and a rerun "
                               "makes only the missing ones")


def step_check(trainer):
    """A diffusers ``callback_on_step_end`` that stops the sampling loop once the run received SIGTERM."""

    def check(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        stop_if_terminated(trainer)
        return callback_kwargs

    return check
