//! trace-analytics: to be built (see issues). Depends only on trace-core.
