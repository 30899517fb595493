package wire

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProjectIDFromSubject(t *testing.T) {
	for subject, want := range map[string]int64{
		"waywo.projects.changed.1":                   1,
		"waywo.projects.changed.9223372036854775807": 9223372036854775807,
	} {
		got, err := ProjectIDFromSubject(subject)
		require.NoError(t, err, subject)
		require.Equal(t, want, got)
	}
	for _, subject := range []string{
		"waywo.projects.changed.", "waywo.projects.changed.0", "waywo.projects.changed.-3",
		"waywo.projects.changed.+3", "waywo.projects.changed.abc", "waywo.projects.changed.12a",
		"waywo.projects.changed.007", "waywo.projects.changed.9223372036854775808",
		"waywo.projects.changed. 1", "waywo.projects.changed.1.2", "waywo.projects.1", "other.subject.5",
	} {
		_, err := ProjectIDFromSubject(subject)
		require.Error(t, err, subject)
	}
}

// FuzzProjectIDFromSubject: an accepted id prints back as the subject's.
func FuzzProjectIDFromSubject(f *testing.F) {
	for _, s := range []string{"waywo.projects.changed.1", "waywo.projects.changed.-1", "waywo.projects.changed.007", "waywo.projects.changed.9223372036854775808", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		id, err := ProjectIDFromSubject(subject)
		if err != nil {
			return
		}
		if id <= 0 || subject != ProjectSubjectPrefix+strconv.FormatInt(id, 10) {
			t.Fatalf("%q accepted as %d", subject, id)
		}
	})
}
