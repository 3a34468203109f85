/* Where the BPF backend pins an attachment: one directory per attached
 * cgroup, /sys/fs/bpf/portfence/APP/NAME/, NAME being the cgroup's path
 * relative to the cgroup v2 mount with '%' written "%25", '/' written
 * "%2F" and '.' written "%2E" (a path becomes one directory name, and
 * decodes back; bpffs refuses a '.' in a name, and every systemd unit
 * has one).  APP is the app's name written the same way. */
#ifndef PORTFENCE_PINS_H
#define PORTFENCE_PINS_H

#include <stdbool.h>
#include <stddef.h>

#define PF_PIN_ROOT "/sys/fs/bpf/portfence"
/* The links of each `run --bpf`, laid out as PF_PIN_ROOT's: APP/NAME/.
 * Beside PF_PIN_ROOT, not in it: bpffs takes no '.' in a name, so no
 * name there could not also be an app's. */
#define PF_PIN_RUN_ROOT "/sys/fs/bpf/portfence-run"

/* Writes the pin name of cgroup_path (relative, e.g.
 * "system.slice/legacy.service"; leading '/' ignored) into out.  Returns
 * its length, or -1 when it does not fit or the path is empty. */
int pf_pin_name_encode(const char *cgroup_path, char *out, size_t out_len);
/* The cgroup path a pin name stands for.  Returns its length, or -1 when
 * the name is not one that pf_pin_name_encode writes (a '%' not starting
 * "%25", "%2F"/"%2f" or "%2E"/"%2e", a bare '/') or does not fit. */
int pf_pin_name_decode(const char *pin_name, char *out, size_t out_len);
/* ROOT/APP, the pin directory of app_name under root (PF_PIN_ROOT or
 * PF_PIN_RUN_ROOT), into out; its length, or -1 when it does not fit. */
int pf_pin_app_dir(const char *root, const char *app_name, char *out, size_t out_len);

/* One attachment: its app's name and its cgroup's path, both decoded
 * (the path as its pin name has it, no leading '/' added or taken off).
 * Returns true to stop the walk. */
typedef bool pf_pin_fn(void *opaque, const char *app_name, const char *cgroup_path);
/* Calls each for every attachment under root (PF_PIN_ROOT or
 * PF_PIN_RUN_ROOT): each directory ROOT/APP/NAME/.  An APP or NAME that
 * starts with '.' or does not decode is skipped, and so is a NAME whose
 * d_type says it is no directory (an unknown d_type is taken for one).
 * 0, or -errno when root cannot be read. */
int pf_pins_each(const char *root, pf_pin_fn *each, void *opaque);
/* The same for the attachments of app_name only (ROOT/APP/NAME/); 0, or
 * -errno when its directory cannot be read (-ENOENT: the app was never
 * attached under root). */
int pf_pins_each_of_app(const char *root, const char *app_name, pf_pin_fn *each, void *opaque);

/* The same walks by raw name, for what handles the pins themselves
 * (sweeps, detach): names as bpffs has them, not decoded.  app_dir is
 * ROOT/APP (or the directory the walk was given); name an entry in it.
 * Entries and app directories whose names start with '.' are skipped;
 * nothing else is (a name that does not decode, a file).  Returns true
 * to stop the walk. */
typedef bool pf_pin_dir_fn(void *opaque, const char *app_dir);
typedef bool pf_pin_entry_fn(void *opaque, const char *app_dir, const char *name);
/* Calls each for every app directory ROOT/APP under root; 0, or -errno
 * when root cannot be read. */
int pf_pin_app_dirs_each(const char *root, pf_pin_dir_fn *each, void *opaque);
/* Calls each for every entry of app_dir; 0, or -errno when it cannot be
 * read. */
int pf_pin_entries_each(const char *app_dir, pf_pin_entry_fn *each, void *opaque);
/* Calls each for every entry of every app directory under root (one that
 * cannot be read is passed over); 0, or -errno when root cannot be
 * read. */
int pf_pins_each_entry(const char *root, pf_pin_entry_fn *each, void *opaque);

#endif
