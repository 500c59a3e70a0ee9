//! kiln's benchmark binaries that need real services or real packages
//! (`src/bin/`): tooling, kept out of the product crates so that no user's
//! binary links `kiln-testsupport`. The README lists their commands.
