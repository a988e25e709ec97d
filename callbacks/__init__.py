"""Lightning callbacks of mos-lightning (imported as ``mos_lightning.callbacks``): optional,
order-independent work such as sample logging, image writing and metrics export."""
