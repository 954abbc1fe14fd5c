// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package criuimage reads and writes the memory images of a CRIU (4.2.1)
// dump, and turns an incremental dump into a full, self-contained one.
//
// # Format
//
// A pagemap-<id>.img (and pagemap-shmem-<id>.img, same format) is
//
//	u32 IMG_COMMON_MAGIC 0x54564319, u32 PAGEMAP_MAGIC 0x56084025 (little endian)
//	record pagemap_head  {pages_id}
//	record pagemap_entry {vaddr, compat_nr_pages, in_parent, flags, nr_pages} ...
//
// where a record is a little-endian u32 length followed by that many bytes
// of protobuf (images/pagemap.proto). The entries are ascending and do not
// overlap. The data of the entries flagged PE_PRESENT is in the raw file
// pages-<pages_id>.img (no magic, no header), in entry order, back to back;
// PE_PARENT entries have their data in the parent dump's images, PE_LAZY
// ones may be restored lazily, and a PE_LAZY entry without PE_PRESENT has
// no data in the images at all (lazy migration from a page server).
//
// The records are decoded with protowire rather than go-criu's generated
// types: go-criu v7.2.0's PagemapEntry predates field 5 (nr_pages, u64),
// which is the only page count CRIU 4.2.1 writes (compat_nr_pages is 0).
//
// # Merging an incremental dump
//
// With --track-mem and --prev-images-dir, CRIU writes the ranges that did not
// change since the parent dump as PE_PARENT entries. MergeParent copies the
// parent's data for them into the dump's own pages files, so that the
// directory restores on its own:
//
//	stats, err := criuimage.MergeParent(dir, parentDir) // parentDir: a full image set
//
// ReadPages walks the pages of a full image, e.g. to compare it with a
// process's memory.
package criuimage
