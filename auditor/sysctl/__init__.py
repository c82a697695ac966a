"""The persistent sysctl configuration: the files boot reads (`tree`) and what boot makes of them
(`boot`). Reading happens once, in `tree`; everything in `boot` is a pure function of bytes."""
