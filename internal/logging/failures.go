package logging

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// File write failures: one family for the log files and the alert file.
const (
	fileWriteFailuresName = "chatguard_log_file_write_failures_total"
	fileWriteFailuresHelp = "Lines that could not be written to a log file (file: combined, errors; alerts: the alert file): the disk is full, or the file or its directory cannot be written. The line still went to the standard output."
)

// NewFileWriteFailures returns the series of chatguard_log_file_write_failures_total
// for one file (combined, errors, alerts), at 0, registered on reg (nil =
// not registered). Each file's writer registers its own series.
func NewFileWriteFailures(reg prometheus.Registerer, file string) (prometheus.Counter, error) {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: fileWriteFailuresName, Help: fileWriteFailuresHelp,
		ConstLabels: prometheus.Labels{"file": file},
	})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("logging: register %s{file=%q}: %w", fileWriteFailuresName, file, err)
		}
	}
	return c, nil
}
