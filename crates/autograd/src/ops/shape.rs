//! Shape ops: reshape, transpose/permute, narrow, concat/split.
