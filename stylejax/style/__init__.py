"""Neural style transfer: options (:mod:`.config`), the objective (:mod:`.objective`), the
compiled loop (:mod:`.loop`) and the run over scales (:mod:`.transfer`)."""
