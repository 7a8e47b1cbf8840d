//! The reference experiment's augmentation: a random rotation of ±25° with probability 0.5.

use crate::rng::Rng;

/// Rotate a `h × w` single-channel image by `degrees` around its centre (bilinear, zero
/// outside).
pub fn rotate(img: &[f32], h: usize, w: usize, degrees: f32) -> Vec<f32> {
    let mut out = Vec::new();
    rotate_into(img, h, w, degrees, &mut out);
    out
}

/// [`rotate`] into `out` (resized to `h × w`).
pub fn rotate_into(img: &[f32], h: usize, w: usize, degrees: f32, out: &mut Vec<f32>) {
    let (s, c) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let at = |y: isize, x: isize| -> f32 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0.0
        } else {
            img[y as usize * w + x as usize]
        }
    };
    out.clear();
    out.resize(h * w, 0.0);
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 - cy, x as f32 - cx);
            let sy = c * dy - s * dx + cy;
            let sx = s * dy + c * dx + cx;
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            out[y * w + x] = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
    }
}

/// The training's random rotation of an image of `shape` (channels × h × w): for a
/// single-channel image, with probability 0.5, an angle in ±25° (degrees); `None` otherwise.
pub fn rotation_angle(shape: [usize; 3], rng: &mut Rng) -> Option<f32> {
    (rng.uniform() < 0.5 && shape[0] == 1).then(|| (rng.uniform() as f32 * 2.0 - 1.0) * 25.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_by_ninety_degrees_moves_pixels_and_zero_keeps_them() {
        let img: Vec<f32> = (0..9).map(|v| v as f32).collect();
        assert_eq!(rotate(&img, 3, 3, 0.0), img);
        let r = rotate(&img, 3, 3, 90.0);
        // The centre stays; the corners move to the neighbouring corners.
        assert!((r[4] - 4.0).abs() < 1e-5);
        let corners: Vec<i32> = [0, 2, 6, 8].iter().map(|&k| r[k].round() as i32).collect();
        assert!(corners.iter().all(|c| [0, 2, 6, 8].contains(c)) && corners != vec![0, 2, 6, 8]);
    }
}
