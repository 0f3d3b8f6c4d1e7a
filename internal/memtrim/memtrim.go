// Package memtrim gives back to the kernel the pages of the running
// executable that a long-lived process touched only while starting.
//
// A Go binary's package initialisers and start-up run code and read data
// (text, rodata, pclntab) from all over the binary; the kernel maps every
// page they touch, and with fault-around (64 KiB windows) and large
// page-cache folios many more, into the process, where they stay counted in
// its VmRSS (RssFile) for as long as it runs. For fedgrid, whose one binary
// links libp2p, gorgonia, arrow, parquet, pgx and badger, that is 30-40 MiB
// for a node whose own memory (RssAnon) is 8 MiB.
//
// ReleaseExecutable unmaps those pages from this process only
// (madvise MADV_DONTNEED on the executable's read-only private mappings).
// The file's pages stay in the page cache: nothing is written or evicted,
// other processes are unaffected, and a page the process needs again comes
// back on its next access through a minor page fault (no disk read while
// the page cache holds it). That cost, a few microseconds per fault window,
// is the trade-off; afterwards RssFile holds only what the process keeps
// using.
package memtrim

// Released is what ReleaseExecutable gave back.
type Released struct {
	// Mappings is the number of read-only mappings of the executable
	// released; Skipped those left alone because they held private
	// (copy-on-write) pages, whose content exists nowhere else.
	Mappings, Skipped int
	// Resident is the bytes those mappings had resident (smaps Rss) before.
	Resident int64
}
