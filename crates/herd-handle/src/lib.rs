//! What a herd cluster can listen on (under construction).
