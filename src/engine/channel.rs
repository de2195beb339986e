//! One connection: read, parse, queue, respond, keep-alive. (STUB)
