//! The built-in synthetic "game -> real" street-scene benchmark generator.
