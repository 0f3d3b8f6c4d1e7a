package store

// CheckDatasetMeta checks (and normalises, as PutDataset does) a new
// dataset's name, description, tags and visibility before its bytes arrive,
// so that a long upload is not refused at its end for its name.
func CheckDatasetMeta(d *Dataset) error { return validateDataset(d) }
