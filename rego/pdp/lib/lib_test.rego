package pdp.lib_test

import data.pdp.lib

window := {"days": ["Monday", "Tuesday"], "from": "07:00", "to": "17:30"}

test_within_window_inside if lib.within_window("2026-11-24T17:29:00Z", window)

test_within_window_at_start if lib.within_window("2026-11-23T07:00:00Z", window)

test_within_window_at_end_is_outside if not lib.within_window("2026-11-24T17:30:00Z", window)

test_within_window_wrong_day if not lib.within_window("2026-11-25T10:00:00Z", window)

test_within_window_bad_time_is_outside if not lib.within_window("yesterday", window)

test_screening_key_folds_case_space_and_punctuation if {
	lib.screening_key("  Kestrel  front, Ltd.") == "KESTRELFRONTLTD"
}

test_screening_key_maps_look_alikes if lib.screening_key("\uff2b\u0435str\u0435l") == "KESTREL"

test_screening_key_keeps_other_letters_apart if lib.screening_key("Kestrel Fronts") != lib.screening_key("Kestrel Front")
